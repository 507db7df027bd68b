package client

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qmount/qmount/p9server"
)

// directImage loop-mounts a fresh ext4 image and returns the mounted
// directory and the image path.
func directImage(t *testing.T) (data, img string) {
	t.Helper()
	requireFUSE(t)
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Skip("no mkfs.ext4")
	}
	dir := t.TempDir()
	img = filepath.Join(dir, "disk.img")
	os.WriteFile(img, nil, 0o644)
	os.Truncate(img, 64<<20)
	if out, err := exec.Command(mkfs, "-q", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs: %v: %s", err, out)
	}
	data = filepath.Join(dir, "fs")
	os.Mkdir(data, 0o755)
	if out, err := exec.Command("mount", "-o", "loop", img, data).CombinedOutput(); err != nil {
		t.Skipf("cannot loop-mount: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", data).Run() })
	return data, img
}

// TestDirectDeadAlias: a hard-linked file whose node is marked dead (a
// name unlinked while its attributes were not cached) gets a second node
// for the same guest inode on the next lookup of its other name. Writes
// through the old node (an fd opened before the unlink) must be seen by
// reads through the new one: the direct-read state is the inode's, not
// the node's.
func TestDirectDeadAlias(t *testing.T) {
	t.Run("direct", func(t *testing.T) { deadAlias(t, true) })
	t.Run("9P", func(t *testing.T) { deadAlias(t, false) })
}

func deadAlias(t *testing.T, direct bool) {
	data, img := directImage(t)
	old := bytes.Repeat([]byte("O"), 1<<20)
	if err := os.WriteFile(filepath.Join(data, "a"), old, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(data, "a"), filepath.Join(data, "b")); err != nil {
		t.Fatal(err)
	}
	unix.Sync()
	dev, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	var opts []Option
	if direct {
		opts = append(opts, WithDirectRead(dev, 64<<20))
	}
	e := mountEnvServer(t, data, []p9server.Option{p9server.WithExtentMaps()}, opts...)

	w, err := os.OpenFile(e.path("a"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.WriteAt([]byte("x"), 0); err != nil { // invalidates the node's attributes
		t.Fatal(err)
	}
	if err := unix.Unlink(e.path("a")); err != nil { // no stat first: the node is marked dead
		t.Fatal(err)
	}
	// Forget the dentry of b (not pinned), so that b is looked up again.
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0); err != nil {
		t.Skip(err)
	}
	r, err := os.Open(e.path("b"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var st1, st2 unix.Stat_t
	unix.Fstat(int(w.Fd()), &st1)
	unix.Fstat(int(r.Fd()), &st2)
	t.Logf("writer ino %d, reader ino %d (same guest file)", st1.Ino, st2.Ino)

	// A write through the fd opened as "a", then a read of the same
	// bytes through "b".
	newData := bytes.Repeat([]byte("N"), 64<<10)
	if _, err := w.WriteAt(newData, 512<<10); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(newData))
	if _, err := r.ReadAt(got, 512<<10); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, newData) {
		t.Fatalf("read %q... after the write through the other name, want %q... (direct bytes %d)", got[:8], newData[:8], e.m.DirectBytes())
	}
}

// TestDirectReadBeforeTruncate: a change that frees blocks (truncate by
// name) waits for a direct read that took the map before it, so the read
// never returns the blocks after they were given to another file. (The
// hook holds the read between taking the map and reading the disk.)
func TestDirectReadBeforeTruncate(t *testing.T) {
	data, img := directImage(t)
	if err := os.WriteFile(filepath.Join(data, "victim"), bytes.Repeat([]byte("V"), 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	unix.Sync()
	dev, _ := os.Open(img)
	defer dev.Close()
	e := mountEnvServer(t, data, []p9server.Option{p9server.WithExtentMaps()}, WithDirectRead(dev, 64<<20))
	r, err := os.OpenFile(e.path("victim"), os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	paused, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	testHookDirectRead = func() {
		once.Do(func() {
			close(paused)
			<-resume
		})
	}
	defer func() { testHookDirectRead = nil }()
	got, err := unix.Mmap(-1, 0, 64<<10, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE) // aligned for O_DIRECT
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(got)
	done := make(chan error, 1)
	go func() { _, err := r.ReadAt(got, 0); done <- err }()
	<-paused
	truncated := make(chan error, 1)
	go func() { truncated <- os.Truncate(e.path("victim"), 0) }()
	time.Sleep(300 * time.Millisecond)
	if st, err := os.Stat(filepath.Join(data, "victim")); err != nil || st.Size() != 1<<20 {
		t.Fatalf("the truncate reached the server while a direct read of the file was in flight (%v)", err)
	}
	close(resume)
	if err := <-done; err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(got, bytes.Repeat([]byte("V"), len(got))) {
		t.Fatalf("the read returned %q..., want the file's bytes", got[:16])
	}
	if err := <-truncated; err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(e.path("victim")); err != nil || st.Size() != 0 {
		t.Fatalf("after the truncate: %v %v", st, err)
	}
}
