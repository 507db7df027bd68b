package client

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qmount/qmount/p9server"
)

// reviewImage loop-mounts a fresh ext4 image and returns the mounted
// directory and the image path.
func reviewImage(t *testing.T) (data, img string) {
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

// TestReviewDirectDeadAlias: a hard-linked file whose node is marked dead
// (a name unlinked while its attributes were not cached) gets a second
// node for the same guest inode on the next lookup of its other name.
// The writers/dataGen of one node do not cover the other: a reader on the
// new node reads the disk through its map while the file is being
// written through the old node (an fd opened before the unlink).
func TestReviewDirectDeadAlias(t *testing.T) {
	t.Run("direct", func(t *testing.T) { reviewDeadAlias(t, true) })
	t.Run("9P", func(t *testing.T) { reviewDeadAlias(t, false) })
}

func reviewDeadAlias(t *testing.T, direct bool) {
	data, img := reviewImage(t)
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

// TestReviewDirectReadAcrossTruncate: a direct read that took the map
// before a truncate by name reads the blocks after they were freed and
// given to another file: the reader gets that file's bytes. (The hook
// only widens the window between taking the map and reading the disk.)
func TestReviewDirectReadAcrossTruncate(t *testing.T) {
	data, img := reviewImage(t)
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
	first := true
	testHookDirectRead = func() {
		if first {
			first = false
			close(paused)
			<-resume
		}
	}
	defer func() { testHookDirectRead = nil }()
	got, err := unix.Mmap(-1, 0, 64<<10, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE) // aligned for O_DIRECT
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := r.ReadAt(got, 0); done <- err }()
	<-paused
	go os.Truncate(e.path("victim"), 0) // waits for the read's pages in the kernel
	for i := 0; ; i++ {
		if st, err := os.Stat(filepath.Join(data, "victim")); err == nil && st.Size() == 0 {
			break
		}
		if i > 500 {
			t.Fatal("truncate did not reach the server")
		}
		time.Sleep(10 * time.Millisecond)
	}
	unix.Sync() // the guest's journal commits (ext4 does every 5 s): the blocks are free
	s, err := os.Create(e.path("secret"))
	if err != nil {
		t.Fatal(err)
	}
	s.Write(bytes.Repeat([]byte("S"), 1<<20))
	s.Sync()
	s.Close()
	close(resume)
	if err := <-done; err != nil {
		t.Logf("read: %v", err)
	}
	if bytes.Contains(got, []byte("S")) {
		t.Fatalf("a read of victim returned bytes of another file: %q...", got[:16])
	}
	t.Logf("read returned %q...", got[:16])
}
