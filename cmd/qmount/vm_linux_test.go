package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMountUnmount: mount (exit 0, printed mount point, status mounted),
// write and read, `qmount unmount` -> everything gone, image clean, data
// there. Without a mount point, one named after the label is made.
func TestMountUnmount(t *testing.T) {
	needVM(t)
	e := newEnv(t)
	img := e.mkfs("disk.img", "My Disk/1", 64)

	r := e.mustRun(img)
	mp := strings.TrimSpace(r.stdout)
	if want := filepath.Join(e.mountDir, "My Disk_1"); mp != want {
		t.Fatalf("mount point %q, want %q", mp, want)
	}
	st := e.statusOf(mp)
	// The fastest built guest serving ext4: mini when it is built.
	wantGuest := "linux"
	if _, err := os.Stat(filepath.Join(guestsDir(), "mini", "amd64", "manifest.json")); err == nil {
		wantGuest = "mini"
	}
	if st.State != "mounted" || st.FSType != "ext4" || st.Guest != wantGuest || st.ReadOnly ||
		len(st.Disks) != 1 || st.Disks[0] != img || !alive(st.SupervisorPID) || !alive(st.VMPID) || !st.CreatedMountpoint {
		t.Errorf("status: %+v", st)
	}
	human := e.mustRun("status").stdout
	if !strings.Contains(human, mp) || !strings.Contains(human, "mounted") {
		t.Errorf("status table:\n%s", human)
	}

	payload := strings.Repeat("qmount end to end\n", 1000)
	if err := os.MkdirAll(filepath.Join(mp, "dir", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mp, "dir", "sub", "file.txt"), []byte(payload), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(mp, "dir", "sub", "file.txt")); err != nil || string(b) != payload {
		t.Fatalf("read back: %d bytes, %v", len(b), err)
	}

	// A second mount of the same disk, read-write, is refused, naming the
	// first; read-only too (the first holds an exclusive lock).
	r2 := e.run(img, filepath.Join(e.work, "second"))
	oneErrorLine(t, r2, "already mounted read-write at "+mp)
	r3 := e.run("--ro", img, filepath.Join(e.work, "second"))
	oneErrorLine(t, r3, "already mounted read-write at "+mp)
	if _, err := os.Stat(filepath.Join(e.work, "second")); err == nil {
		t.Error("refused mount left its mount point")
	}

	// The log holds the supervisor's and the guest's lines.
	logOut := e.mustRun("log", mp).stdout
	if !strings.Contains(logOut, "guest console") || !strings.Contains(logOut, "mounted") {
		t.Errorf("qmount log:\n%s", logOut)
	}

	// log -f follows until the mount ends.
	follow := exec.Command(qmountBin, "log", "-f", mp)
	follow.Env = e.environ()
	var followOut strings.Builder
	follow.Stdout = &followOut
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	followDone := make(chan error, 1)
	go func() { followDone <- follow.Wait() }()
	t.Cleanup(func() { follow.Process.Kill() })

	e.mustRun("unmount", mp)
	select {
	case err := <-followDone:
		if err != nil || !strings.Contains(followOut.String(), "mount ended cleanly") {
			t.Errorf("log -f: %v\n%s", err, followOut.String())
		}
	case <-time.After(10 * time.Second):
		t.Error("log -f still following 10 s after the mount ended")
	}
	if alive(st.SupervisorPID) || alive(st.VMPID) {
		t.Errorf("supervisor or VM still running after qmount unmount")
	}
	e.assertNothingLeft()
	if _, err := os.Stat(mp); !os.IsNotExist(err) {
		t.Errorf("created mount point not removed: %v", err)
	}
	fsck(t, img)
	if got := catImage(t, img, "/dir/sub/file.txt"); got != payload {
		t.Errorf("file in the image: %d bytes, want %d", len(got), len(payload))
	}
	if out := e.mustRun("log").stdout; !strings.Contains(out, "mount ended cleanly") {
		t.Errorf("last log does not show a clean end:\n%s", out)
	}
}

// TestTwoMountsUmount: two images mounted read-write at once, ended by
// umount and by fusermount3 -u: both clean.
func TestTwoMountsUmount(t *testing.T) {
	needVM(t)
	e := newEnv(t)
	imgs := []string{e.mkfs("a.img", "A", 32), e.mkfs("b.img", "B", 32)}
	mps := []string{filepath.Join(e.work, "mnt a"), filepath.Join(e.work, "mnt-b")}
	os.Mkdir(mps[1], 0o755) // one existing, one created by qmount
	var sts []statusEntry
	for i := range imgs {
		r := e.mustRun("mount", imgs[i], mps[i])
		if got := strings.TrimSpace(r.stdout); got != mps[i] {
			t.Fatalf("printed %q, want %q", got, mps[i])
		}
	}
	for i := range imgs {
		sts = append(sts, e.statusOf(mps[i]))
		if err := os.WriteFile(filepath.Join(mps[i], "name"), []byte(imgs[i]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i := range imgs {
		if b, err := os.ReadFile(filepath.Join(mps[i], "name")); err != nil || string(b) != imgs[i] {
			t.Fatalf("mount %d reads %q, %v", i, b, err)
		}
	}

	if out, err := exec.Command("umount", mps[0]).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v %s", err, out)
	}
	if out, err := exec.Command("fusermount3", "-u", mps[1]).CombinedOutput(); err != nil {
		t.Fatalf("fusermount3 -u: %v %s", err, out)
	}
	for i := range imgs {
		waitGone(t, "supervisor", sts[i].SupervisorPID)
		waitGone(t, "VM", sts[i].VMPID)
	}
	e.assertNothingLeft()
	if _, err := os.Stat(mps[0]); !os.IsNotExist(err) {
		t.Errorf("created mount point %s not removed", mps[0])
	}
	if _, err := os.Stat(mps[1]); err != nil {
		t.Errorf("existing mount point %s removed: %v", mps[1], err)
	}
	for i := range imgs {
		fsck(t, imgs[i])
		if got := catImage(t, imgs[i], "/name"); got != imgs[i] {
			t.Errorf("image %d holds %q", i, got)
		}
	}
}

// TestKill9: kill -9 of the supervisor: fsync'd data reaches the image,
// status says stale, stop cleans up everything.
func TestKill9(t *testing.T) {
	needVM(t)
	e := newEnv(t)
	img := e.mkfs("k.img", "K", 32)
	mp := filepath.Join(e.work, "k")
	e.mustRun(img, mp)
	st := e.statusOf(mp)

	f, err := os.Create(filepath.Join(mp, "synced"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("fsynced before the kill\n"); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()

	syscall.Kill(st.SupervisorPID, syscall.SIGKILL)
	waitGone(t, "supervisor", st.SupervisorPID)
	if got := e.statusOf(mp); got.State != "stale" {
		t.Errorf("status after kill -9: %q, want stale", got.State)
	}
	e.mustRun("stop", mp)
	waitGone(t, "VM", st.VMPID)
	e.assertNothingLeft()
	if _, err := os.Stat(mp); !os.IsNotExist(err) {
		t.Errorf("created mount point not removed: %v", err)
	}
	if len(e.status()) != 0 {
		t.Error("status still lists the mount")
	}
	// The guest noticed the lost control connection, synced, unmounted
	// and powered off: the image is clean and holds the data.
	fsck(t, img)
	if got := catImage(t, img, "/synced"); got != "fsynced before the kill\n" {
		t.Errorf("fsync'd file in the image: %q", got)
	}
}

// TestGuestError: the guest's own mount error, one line, nothing left.
func TestGuestError(t *testing.T) {
	needVM(t)
	e := newEnv(t)
	img := e.mkfs("g.img", "G", 32)
	mp := filepath.Join(e.work, "g")
	r := e.run("-o", "nosuchoption", img, mp)
	oneErrorLine(t, r, "nosuchoption")
	e.assertNothingLeft()
	if _, err := os.Stat(mp); !os.IsNotExist(err) {
		t.Errorf("mount point left: %v", err)
	}
}

// TestForeground: --foreground serves in the qmount process itself until
// SIGTERM, then ends cleanly with exit 0.
func TestForeground(t *testing.T) {
	needVM(t)
	e := newEnv(t)
	img := e.mkfs("fg.img", "FG", 32)
	mp := filepath.Join(e.work, "fg")
	cmd := exec.Command(qmountBin, "mount", "--foreground", img, mp)
	cmd.Env = e.environ()
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	waitMounted(t, mp, done)
	st := e.statusOf(mp)
	if st.SupervisorPID != cmd.Process.Pid {
		t.Errorf("supervisor pid %d, want the qmount process %d", st.SupervisorPID, cmd.Process.Pid)
	}
	if err := os.WriteFile(filepath.Join(mp, "fg"), []byte("foreground\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := <-done; err != nil {
		t.Fatalf("qmount --foreground: %v\n%s", err, stderr.String())
	}
	if got := strings.TrimSpace(stdout.String()); got != mp {
		t.Errorf("stdout %q, want %q", got, mp)
	}
	waitGone(t, "VM", st.VMPID)
	e.assertNothingLeft()
	fsck(t, img)
	if got := catImage(t, img, "/fg"); got != "foreground\n" {
		t.Errorf("image holds %q", got)
	}
}

// TestVMCrash: when the VM dies, the supervisor notices, unmounts and
// cleans up by itself, and the log says what happened.
func TestVMCrash(t *testing.T) {
	needVM(t)
	e := newEnv(t)
	img := e.mkfs("c.img", "C", 32)
	mp := filepath.Join(e.work, "c")
	e.mustRun(img, mp)
	st := e.statusOf(mp)
	syscall.Kill(st.VMPID, syscall.SIGKILL)
	waitGone(t, "supervisor", st.SupervisorPID)
	e.assertNothingLeft()
	if _, err := os.Stat(mp); !os.IsNotExist(err) {
		t.Errorf("created mount point not removed: %v", err)
	}
	if out := e.mustRun("log").stdout; !strings.Contains(out, "the guest VM stopped unexpectedly") {
		t.Errorf("log does not explain the end:\n%s", out)
	}
}

// TestUnmountWhileStarting: an unmount during boot stops the mount; the
// mount command reports it, nothing is left.
func TestUnmountWhileStarting(t *testing.T) {
	needVM(t)
	e := newEnv(t)
	img := e.mkfs("s.img", "S", 32)
	mp := filepath.Join(e.work, "s")
	cmd := exec.Command(qmountBin, img, mp)
	cmd.Env = e.environ()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		sts := e.status()
		if len(sts) == 1 && sts[0].State == "starting" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never saw the mount starting: %+v", sts)
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.mustRun("unmount", mp)
	if err := <-done; err == nil || !strings.Contains(stderr.String(), "qmount: stopped while starting") {
		t.Errorf("mount: %v\n%s", err, stderr.String())
	}
	e.assertNothingLeft()
	if _, err := os.Stat(mp); !os.IsNotExist(err) {
		t.Errorf("mount point left: %v", err)
	}
}
