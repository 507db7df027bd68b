package client

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"

	"github.com/qmount/qmount/internal/p9ext"
)

// TestListBatchContinues: a batch that does not continue the listing
// where its last batch ended (another reader restarted it meanwhile)
// drops the listing instead of completing it with a gap.
func TestListBatchContinues(t *testing.T) {
	n := &node{fsys: &fsys{}}
	ent := func(name string, off uint64) []p9ext.Entry {
		return []p9ext.Entry{{Name: name, Offset: off,
			Valid: p9.AttrMask{Mode: true, Size: true, MTime: true, NLink: true}, Attr: p9.Attr{Mode: p9.ModeRegular, NLink: 1}}}
	}
	m := n.listEpoch()
	n.listBatch(ent("a", 1), 0, false, m) // reader 2, batch 1
	n.listBatch(ent("b", 2), 1, false, m) // reader 2, batch 2
	n.listBatch(ent("a", 1), 0, false, m) // reader 1 starts over
	n.listBatch(ent("c", 3), 2, true, m)  // reader 2, last batch
	if _, absent := n.listed("b"); absent {
		t.Error("b, listed by the server, is answered absent")
	}
	// One reader from start to end: complete.
	n.listBatch(ent("a", 1), 0, false, m)
	n.listBatch(ent("b", 2), 1, false, m)
	n.listBatch(ent("c", 3), 2, true, m)
	if e, _ := n.listed("b"); e == nil {
		t.Error("b is not answered from a listing read in one pass")
	}
	if _, absent := n.listed("zzz"); !absent {
		t.Error("an absent name is not answered from a complete listing")
	}
}

// TestListingTwoReaders: two handles reading one large directory
// interleaved leave every name found.
func TestListingTwoReaders(t *testing.T) {
	data := t.TempDir()
	dir := filepath.Join(data, "d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	makeFiles(t, dir, "f", 40000)
	e := mountEnv(t, data)
	h2, err := os.Open(e.path("d"))
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Close()
	first, err := h2.Readdirnames(3000)
	if err != nil {
		t.Fatal(err)
	}
	h1, err := os.Open(e.path("d"))
	if err != nil {
		t.Fatal(err)
	}
	defer h1.Close()
	if _, err := h1.Readdirnames(10); err != nil {
		t.Fatal(err)
	}
	rest, err := h2.Readdirnames(-1)
	if err != nil {
		t.Fatal(err)
	}
	if len(first)+len(rest) != 40000 {
		t.Errorf("one handle listed %d names, want 40000", len(first)+len(rest))
	}
	dropCaches(t)
	missing := 0
	for _, name := range append(first, rest...) {
		if _, err := os.Lstat(e.path("d/" + name)); err != nil {
			if missing == 0 {
				t.Errorf("%s: %v", name, err)
			}
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d existing names not found", missing)
	}
}

// TestOpenLinkRemoved: with a file open through name a, removing a
// leaves its other link b fully usable (chmod, truncate, xattrs): the
// open file's fid, which the p9 server now refuses for those, is no
// longer lent.
func TestOpenLinkRemoved(t *testing.T) {
	data := t.TempDir()
	if err := os.WriteFile(filepath.Join(data, "a"), []byte("xyz"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(filepath.Join(data, "a"), "user.k", []byte("v"), 0); err != nil {
		t.Fatalf("the test directory's file system has no user xattrs: %v", err)
	}
	e := mountEnv(t, data)
	f, err := os.OpenFile(e.path("a"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Link(e.path("a"), e.path("b")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(e.path("a")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(e.path("b"), 0o600); err != nil {
		t.Errorf("chmod b: %v", err)
	}
	if err := os.Truncate(e.path("b"), 1); err != nil {
		t.Errorf("truncate b: %v", err)
	}
	buf := make([]byte, 16)
	if n, err := unix.Getxattr(e.path("b"), "user.k", buf); err != nil || string(buf[:n]) != "v" {
		t.Errorf("getxattr b user.k: %q, %v", buf[:max(n, 0)], err)
	}
	fi, err := os.Stat(filepath.Join(data, "b"))
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != 1 {
		t.Errorf("server file b: %v, %v", fi, err)
	}
	if _, err := f.Write([]byte("w")); err != nil {
		t.Errorf("write through the still open file: %v", err)
	}
}
