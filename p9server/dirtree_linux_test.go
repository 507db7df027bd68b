package p9server

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/qmount/qmount/internal/p9ext"
)

// TestReaddirTree: READDIRTREE lists the subdirectories after a cookie,
// each complete and equal to its READDIRPLUS listing, skipping other
// entries, in chunks that resume where the last one ended, and leaves
// no descriptor open.
func TestReaddirTree(t *testing.T) {
	dir := t.TempDir()
	want := map[string]int{}
	for d := 0; d < 20; d++ {
		name := fmt.Sprintf("d%02d", d)
		must(t, os.Mkdir(filepath.Join(dir, name), 0o755))
		for i := 0; i < d*10; i++ {
			must(t, os.WriteFile(filepath.Join(dir, name, fmt.Sprintf("f%03d", i)), nil, 0o644))
		}
		must(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("file%02d", d)), nil, 0o644))
		want[name] = d * 10
	}
	srv := newServer(t, dir)
	rc := newRawClient(t, srv, DefaultMessageSize)
	rc.attach(1)
	must(t, rc.walk(1, 2))
	base := srv.OpenFiles()

	got := map[string]int{}
	after, requests := uint64(0), 0
	for {
		b, err := rc.getXattr(2, p9ext.ReaddirTreeName(after, 1<<20, 6))
		if err != nil {
			t.Fatalf("readdirtree after %d: %v", after, err)
		}
		requests++
		tree, err := p9ext.DecodeTree(b)
		if err != nil {
			t.Fatal(err)
		}
		if len(tree.Subs) > 6 {
			t.Errorf("%d subdirectories in a chunk of 6", len(tree.Subs))
		}
		for _, s := range tree.Subs {
			if _, dup := got[s.Name]; dup {
				t.Errorf("%s listed twice", s.Name)
			}
			if !s.Batch.EOF {
				t.Errorf("%s listed in part", s.Name)
			}
			got[s.Name] = len(s.Batch.Entries)
			for _, e := range s.Batch.Entries {
				if !e.Valid.Mode || !e.Valid.Size {
					t.Errorf("%s/%s without attributes", s.Name, e.Name)
				}
			}
		}
		if tree.Done {
			break
		}
		if len(tree.Subs) == 0 || requests > 10 {
			t.Fatal("no progress")
		}
		after = tree.Subs[len(tree.Subs)-1].Offset
	}
	if requests != 4 {
		t.Errorf("%d requests for 20 subdirectories by 6, want 4", requests)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("listed %v, want %v", got, want)
	}
	// A bound smaller than the second listing: the first is listed in
	// part, never the second.
	b, err := rc.getXattr(2, p9ext.ReaddirTreeName(0, 600, 6))
	if err != nil {
		t.Fatal(err)
	}
	tree, err := p9ext.DecodeTree(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(tree.Subs) != 1 || tree.Done {
		t.Errorf("a 600-byte tree has %d listings (done %v), want the first alone", len(tree.Subs), tree.Done)
	}
	// Without attributes: the file type alone.
	b, err = rc.getXattr(2, p9ext.ReaddirTreeNamesName(0, 1<<20, 20))
	if err != nil {
		t.Fatal(err)
	}
	if tree, err = p9ext.DecodeTree(b); err != nil {
		t.Fatal(err)
	}
	if len(tree.Subs) != 20 {
		t.Errorf("names-only tree: %d listings, want 20", len(tree.Subs))
	}
	for _, s := range tree.Subs {
		for _, e := range s.Batch.Entries {
			if e.Valid.Size || !e.Valid.Mode || e.Attr.Mode != 0o100000 {
				t.Errorf("%s/%s: names-only entry with %+v, mode %o", s.Name, e.Name, e.Valid, e.Attr.Mode)
			}
		}
	}
	if files := srv.OpenFiles(); files != base {
		t.Errorf("server files: %d, want %d", files, base)
	}
}
