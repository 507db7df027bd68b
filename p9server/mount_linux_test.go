//go:build linux

package p9server

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// mountTmpfs mounts a tmpfs at dir (unmounted at cleanup), or skips the
// test where mounting is not allowed.
func mountTmpfs(t *testing.T, dir string, flags uintptr, opts string) {
	t.Helper()
	must(t, os.MkdirAll(dir, 0o755))
	if err := unix.Mount("tmpfs", dir, "tmpfs", flags, opts); err != nil {
		t.Skipf("cannot mount tmpfs (needs root and CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
}

// TestErrnosFromOtherMounts: EXDEV, ENOSPC and the kernel's EROFS come
// through as they are, and files on another filesystem below the root
// get stable QID paths distinct from the root filesystem's inodes.
func TestErrnosFromOtherMounts(t *testing.T) {
	dir := t.TempDir()
	baseTree(t, dir)
	mountTmpfs(t, filepath.Join(dir, "small"), 0, "size=64k")
	mountTmpfs(t, filepath.Join(dir, "ro"), 0, "size=64k")
	must(t, os.WriteFile(filepath.Join(dir, "ro", "f"), []byte("ro"), 0o644))
	must(t, unix.Mount("", filepath.Join(dir, "ro"), "", unix.MS_REMOUNT|unix.MS_RDONLY, ""))
	_, _, r := connect(t, dir)

	if err := p9Rename(t, r, "a.txt", "small/a.txt"); errnoOf(err) != int(unix.EXDEV) {
		t.Errorf("rename across filesystems: %v, want EXDEV", err)
	}
	err := p9Create(t, r, "small/fill", p9.WriteOnly, 0o644, "")
	must(t, err)
	err = p9Open(t, r, "small/fill", p9.WriteOnly, func(f p9.File) error {
		chunk := make([]byte, 16<<10)
		for off := int64(0); off < 1<<20; off += int64(len(chunk)) {
			if _, err := f.WriteAt(chunk, off); err != nil {
				return err
			}
		}
		return nil
	})
	if errnoOf(err) != int(unix.ENOSPC) {
		t.Errorf("filling a 64 KiB tmpfs: %v, want ENOSPC", err)
	}
	rod := walk(t, r, "ro")
	if _, err := rod.Mkdir("x", 0o755, 0, 0); errnoOf(err) != int(unix.EROFS) {
		t.Errorf("mkdir on a read-only mount: %v, want EROFS", err)
	}
	rod.Close()
	if err := p9Open(t, r, "ro/f", p9.WriteOnly, func(p9.File) error { return nil }); errnoOf(err) != int(unix.EROFS) {
		t.Errorf("open for writing on a read-only mount: %v, want EROFS", err)
	}

	// QIDs on the other filesystems: top bit set, stable, distinct.
	qidOf := func(path string) p9.QID {
		f := walk(t, r, path)
		defer f.Close()
		q, _, _, err := f.GetAttr(p9.AttrMaskAll)
		must(t, err)
		return q
	}
	q1, q2 := qidOf("small/fill"), qidOf("ro/f")
	if q1.Path>>63 != 1 || q2.Path>>63 != 1 || q1.Path == q2.Path {
		t.Errorf("foreign qids %#x %#x", q1.Path, q2.Path)
	}
	if again := qidOf("small/fill"); again != q1 {
		t.Errorf("qid changed: %v then %v", q1, again)
	}
	if q := qidOf("a.txt"); q.Path>>63 != 0 {
		t.Errorf("root filesystem qid %#x has the top bit", q.Path)
	}
}
