package supervisor

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestDiskLock(t *testing.T) {
	l := Layout{Root: t.TempDir()}
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "link.img")
	if err := os.Symlink(img, link); err != nil {
		t.Fatal(err)
	}

	rw, err := l.lockDisk(img, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	// The same file by another path, read-write or read-only: busy.
	if _, err := l.lockDisk(link, 0, false); !errors.Is(err, ErrDiskBusy) {
		t.Errorf("second read-write lock: %v, want ErrDiskBusy", err)
	}
	if _, err := l.lockDisk(img, 0, true); !errors.Is(err, ErrDiskBusy) {
		t.Errorf("read-only lock while read-write: %v, want ErrDiskBusy", err)
	}
	// Another partition of the same disk is another lock.
	p1, err := l.lockDisk(img, 1, false)
	if err != nil {
		t.Errorf("partition 1: %v", err)
	}
	p1.release()
	rw.release()

	// Read-only locks share; a read-write one is refused meanwhile.
	ro1, err := l.lockDisk(img, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	ro2, err := l.lockDisk(link, 0, true)
	if err != nil {
		t.Fatalf("second read-only lock: %v", err)
	}
	if _, err := l.lockDisk(img, 0, false); !errors.Is(err, ErrDiskBusy) {
		t.Errorf("read-write lock while read-only: %v, want ErrDiskBusy", err)
	}
	ro1.release()
	ro2.release()
	ents, _ := os.ReadDir(l.locksDir())
	if len(ents) != 0 {
		t.Errorf("lock files left after release: %v", ents)
	}
	again, err := l.lockDisk(img, 0, false)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	again.release()
}
