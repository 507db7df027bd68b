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

// TestBadInput: every mistake gives one line, exit 1 and leaves nothing.
func TestBadInput(t *testing.T) {
	need(t, "mkfs.ext4")
	e := newEnv(t)
	img := e.mkfs("good.img", "GOOD", 16)
	blank := filepath.Join(e.work, "blank.img")
	os.WriteFile(blank, make([]byte, 4<<20), 0o644)
	empty := filepath.Join(e.work, "empty.img")
	os.WriteFile(empty, nil, 0o644)
	file := filepath.Join(e.work, "afile")
	os.WriteFile(file, []byte("x"), 0o644)
	dir := filepath.Join(e.work, "adir")
	os.Mkdir(dir, 0o755)
	guestlessEnv := *e

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"missing file", []string{filepath.Join(e.work, "nope.img")}, "no such file"},
		{"missing file with mount", []string{"mount", filepath.Join(e.work, "nope.img"), filepath.Join(e.work, "mp")}, "no such file"},
		{"directory as disk", []string{dir}, "is a directory"},
		{"unformatted image", []string{blank}, "no filesystem found on " + blank},
		{"empty image", []string{empty}, "is empty"},
		{"mount point is a file", []string{img, file}, "is not a directory"},
		{"mount point parent missing", []string{img, filepath.Join(e.work, "no", "mp")}, "parent directory does not exist"},
		{"unknown -t", []string{"-t", "bogusfs", img}, `unknown filesystem type "bogusfs"`},
		{"-t with a comma", []string{"-t", "ext4,ro", img}, "unknown filesystem type"},
		{"-o only commas", []string{"-o", ",,,", img}, "name no option"},
		{"-o newline", []string{"-o", "ro\nrw", img}, "control character"},
		{"-o too long", []string{"-o", strings.Repeat("a", 5000), img}, "too long"},
		{"missing partition", []string{img + "@3"}, "partition 3 holds no mountable filesystem"},
		{"too many arguments", []string{img, dir, dir}, "too many arguments"},
		{"no disk", []string{"mount"}, "no disk given"},
		{"bad --owner", []string{"--owner", "them", img}, "--owner"},
		{"bad --memory", []string{"--memory", "1", img}, "--memory"},
		{"unmount unknown", []string{"unmount", dir}, "is not mounted by qmount"},
		{"stop unknown", []string{"stop", dir}, "is not mounted by qmount"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.run(tc.args...)
			oneErrorLine(t, r, tc.want)
			if r.stdout != "" {
				t.Errorf("stdout: %q", r.stdout)
			}
			e.assertNothingLeft()
			if _, err := os.Stat(filepath.Join(e.work, "mp")); err == nil {
				t.Error("mount point created")
			}
		})
	}

	t.Run("hypervisor missing", func(t *testing.T) {
		g := guestlessEnv
		g.t = t
		if _, err := os.Stat(filepath.Join(guestsDir(), "linux", "amd64", "manifest.json")); err != nil {
			t.Skip("guest not built: run make guests")
		}
		cmd := exec.Command(qmountBin, img, filepath.Join(e.work, "mp"))
		cmd.Env = append(g.environ(), "PATH="+e.work)
		out, _ := cmd.CombinedOutput()
		r := result{code: cmd.ProcessState.ExitCode(), stderr: string(out)}
		oneErrorLine(t, r, "install qemu-system-x86")
		g.assertNothingLeft()
	})

	t.Run("no permission", func(t *testing.T) {
		if os.Getuid() != 0 {
			t.Skip("needs root to run qmount as another user")
		}
		need(t, "setpriv")
		// Let the other user reach the binary and the image, not read it.
		for _, d := range []string{filepath.Dir(qmountBin), filepath.Dir(e.work), e.work} {
			os.Chmod(d, 0o755)
		}
		secret := filepath.Join(e.work, "secret.img")
		b, _ := os.ReadFile(img)
		os.WriteFile(secret, b, 0o600)
		cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", qmountBin, secret)
		cmd.Env = append(e.environ(), "HOME=/nonexistent")
		out, _ := cmd.CombinedOutput()
		r := result{code: cmd.ProcessState.ExitCode(), stderr: string(out)}
		oneErrorLine(t, r, "no permission to read "+secret)
		e.assertNothingLeft()
	})

	t.Run("guest not built", func(t *testing.T) {
		g := guestlessEnv
		g.t = t
		cmd := exec.Command(qmountBin, img, filepath.Join(e.work, "mp"))
		cmd.Env = append(g.environ(), "QMOUNT_GUESTS="+e.work)
		out, _ := cmd.CombinedOutput()
		r := result{code: cmd.ProcessState.ExitCode(), stderr: string(out)}
		oneErrorLine(t, r, "make guest GUEST=linux")
		g.assertNothingLeft()
	})
}

// TestLoopback: the data path without a VM, ended by umount and by SIGTERM.
func TestLoopback(t *testing.T) {
	need(t, "fusermount3")
	for _, how := range []string{"umount", "fusermount3", "SIGTERM", "SIGINT"} {
		t.Run(how, func(t *testing.T) {
			e := newEnv(t)
			src := filepath.Join(e.work, "src")
			mp := filepath.Join(e.work, "mnt")
			os.Mkdir(src, 0o755)
			os.Mkdir(mp, 0o755)
			os.WriteFile(filepath.Join(src, "hello"), []byte("hello\n"), 0o644)

			cmd := exec.Command(qmountBin, "loopback", src, mp)
			cmd.Env = e.environ()
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			t.Cleanup(func() { cmd.Process.Kill(); syscall.Unmount(mp, syscall.MNT_DETACH) })
			waitMounted(t, mp, done)

			if b, err := os.ReadFile(filepath.Join(mp, "hello")); err != nil || string(b) != "hello\n" {
				t.Fatalf("reading through the mount: %q, %v", b, err)
			}
			if err := os.WriteFile(filepath.Join(mp, "new"), []byte("written\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if b, err := os.ReadFile(filepath.Join(src, "new")); err != nil || string(b) != "written\n" {
				t.Fatalf("written file in the source directory: %q, %v", b, err)
			}

			switch how {
			case "umount":
				out, err := exec.Command("umount", mp).CombinedOutput()
				if err != nil {
					t.Fatalf("umount: %v %s", err, out)
				}
			case "fusermount3":
				out, err := exec.Command("fusermount3", "-u", mp).CombinedOutput()
				if err != nil {
					t.Fatalf("fusermount3 -u: %v %s", err, out)
				}
			case "SIGTERM":
				cmd.Process.Signal(syscall.SIGTERM)
			case "SIGINT":
				cmd.Process.Signal(syscall.SIGINT)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("qmount loopback: %v\n%s", err, stderr.String())
				}
			case <-time.After(10 * time.Second):
				t.Fatal("qmount loopback still running 10 s after the unmount")
			}
			if isMountpoint(mp) {
				t.Error("still mounted")
			}
		})
	}
}

func isMountpoint(p string) bool {
	for _, m := range mountsUnder(filepath.Dir(p)) {
		if m == p {
			return true
		}
	}
	return false
}

// waitMounted waits until mp is a mount point.
func waitMounted(t *testing.T, mp string, exited <-chan error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !isMountpoint(mp) {
		select {
		case err := <-exited:
			t.Fatalf("qmount exited before mounting: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("not mounted after 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
