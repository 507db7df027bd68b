//go:build linux

package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qmount/qmount/guests"
	"github.com/qmount/qmount/internal/wire"
	"github.com/qmount/qmount/session"
	"github.com/qmount/qmount/vmm"
	"github.com/qmount/qmount/vmm/qemu"
)

const childEnv = "QMOUNT_E2E_CHILD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		if err := childMain(spec); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func makeExt4(t *testing.T, dir string, seed tree) string {
	t.Helper()
	seedDir := filepath.Join(dir, "seed")
	writeTree(t, seedDir, seed)
	img := filepath.Join(dir, "disk.img")
	sparse(t, img, 64)
	run(t, "mkfs.ext4", "-q", "-F", "-d", seedDir, img)
	return img
}

// TestCorruptImage: a zeroed superblock fails with the guest kernel's own
// error text, and no VM or socket is left behind.
func TestCorruptImage(t *testing.T) {
	findGuest(t, hostArch())
	requireTools(t, "mkfs.ext4")
	dir := t.TempDir()
	img := makeExt4(t, dir, tree{"f": []byte("x")})
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 4096), 0); err != nil { // primary superblock at 1024
		t.Fatal(err)
	}
	f.Close()

	state := t.TempDir()
	_, err = tryBoot(t, img, bootOpts{fstype: "ext4", stateDir: state})
	var ge *session.GuestError
	if !errors.As(err, &ge) {
		t.Fatalf("mounting a corrupt image: %v, want a guest error", err)
	}
	t.Logf("guest error: %v", ge)
	if !strings.Contains(ge.Text, "EXT4-fs") || !strings.Contains(ge.Text, "Can't find ext4 filesystem") {
		t.Errorf("error %q does not carry the kernel's text", ge.Text)
	}
	if leaked := qemuPIDs(t, state); len(leaked) > 0 {
		t.Errorf("qemu processes left behind: %v", leaked)
	}
	if left, _ := filepath.Glob(filepath.Join(state, "*.sock")); len(left) > 0 {
		t.Errorf("sockets left behind: %v", left)
	}
}

// TestHostKilled: the host side dies (SIGKILL) after an fsync'd write; the
// guest syncs, unmounts and powers off by itself, and the image holds the
// fsync'd data and is clean.
func TestHostKilled(t *testing.T) {
	g := findGuest(t, hostArch())
	requireTools(t, "mkfs.ext4", "e2fsck", "debugfs", "fusermount3")
	dir := t.TempDir()
	img := makeExt4(t, dir, tree{"seed": []byte("seed\n")})
	state := filepath.Join(dir, "state")
	mnt := filepath.Join(dir, "mnt")
	for _, d := range []string{state, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { exec.Command("fusermount3", "-uz", mnt).Run() })

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+strings.Join([]string{img, state, mnt, g.Dir}, "|"))
	cmd.Stderr = testWriter{t}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("child did not get ready: %v", err)
	}
	f := strings.Fields(line)
	if len(f) != 2 || f[0] != "READY" {
		t.Fatalf("child said %q", line)
	}
	qemuPID, _ := strconv.Atoi(f[1])
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	start := time.Now()
	for processAlive(qemuPID) {
		if time.Since(start) > 90*time.Second {
			syscall.Kill(qemuPID, syscall.SIGKILL)
			t.Fatalf("the guest did not power off after its host died\n%s", tail(filepath.Join(state, "console.log")))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("guest powered off %v after the host was killed", time.Since(start).Round(time.Millisecond))
	run(t, "e2fsck", "-fn", img)
	got := run(t, "debugfs", "-R", "cat /durable.txt", img)
	if !strings.Contains(got, "fsynced before the crash") {
		t.Fatalf("fsync'd data missing from the image: %q", got)
	}
	if c, _ := os.ReadFile(filepath.Join(state, "console.log")); !strings.Contains(string(c), "unmount") {
		t.Logf("console:\n%s", c)
	}
}

// childMain is the host side that TestHostKilled kills: boot, mount, write
// and fsync a file, say READY, then wait to be killed.
func childMain(spec string) error {
	parts := strings.Split(spec, "|")
	if len(parts) != 4 {
		return fmt.Errorf("bad spec %q", spec)
	}
	img, state, mnt, guestDir := parts[0], parts[1], parts[2], parts[3]
	g, err := guests.Load(guestDir)
	if err != nil {
		return err
	}
	// The VM must outlive this process, as it outlives a killed
	// supervisor, so that the guest can sync and unmount by itself.
	drv := qemu.New(qemu.WithPdeathsig(false))
	ctx := context.Background()
	s, err := session.Start(ctx, session.Config{
		Driver: drv,
		Machine: vmm.Config{
			Kernel: g.Kernel, Initrd: g.Initrd, Arch: g.Arch, MemoryMiB: 256, CPUs: 1,
			ConsoleLog: filepath.Join(state, "console.log"), StateDir: state,
			Disks: []vmm.Disk{{Path: img, Serial: wire.DiskSerial(0)}},
		},
		Mount:  wire.MountRequest{Disks: []string{wire.DiskSerial(0)}, FSType: "ext4"},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return err
	}
	conn, err := s.DialNineP(ctx)
	if err != nil {
		return err
	}
	if _, err := mountFUSE(ctx, nil, conn, mnt, false); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(mnt, "durable.txt"))
	if err != nil {
		return err
	}
	if _, err := f.WriteString("fsynced before the crash\n"); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	// Close it: a FUSE server killed while it has a file open on its own
	// mount deadlocks its exit in the kernel's FLUSH. The real supervisor
	// never opens files on its own mount.
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Printf("READY %d\n", s.Machine().PID())
	select {}
}

// TestBootTimeline boots the default guest on ext4 several times and
// reports the guest's boot timeline and the time to the first 9P byte.
func TestBootTimeline(t *testing.T) {
	findGuest(t, hostArch())
	requireTools(t, "mkfs.ext4")
	img := makeExt4(t, t.TempDir(), tree{"f": []byte("x")})
	const runs = 5
	var firsts, walls []int
	for i := 0; i < runs; i++ {
		b := boot(t, img, bootOpts{fstype: "ext4", readOnly: true})
		if _, err := os.ReadFile(filepath.Join(b.mnt, "f")); err != nil {
			t.Fatal(err)
		}
		b.stop(t)
		tl, ok := timeline(b.console)
		if !ok {
			t.Fatalf("no timeline line in the console log\n%s", tail(b.console))
		}
		for _, k := range []string{"init", "modules", "connected", "mounted", "serving", "first9p"} {
			if _, ok := tl[k]; !ok {
				t.Fatalf("timeline lacks %s: %v", k, tl)
			}
		}
		if !(tl["init"] <= tl["modules"] && tl["modules"] <= tl["mounted"] && tl["mounted"] <= tl["serving"] && tl["serving"] <= tl["first9p"]) {
			t.Errorf("timeline out of order: %v", tl)
		}
		t.Logf("run %d: host start->mounted %v; guest (ms) %v", i, b.bootTime.Round(time.Millisecond), tl)
		firsts = append(firsts, tl["first9p"])
		walls = append(walls, int(b.bootTime.Milliseconds()))
	}
	sort.Ints(firsts)
	sort.Ints(walls)
	t.Logf("median guest time to first 9P byte: %d ms; median host time start->mounted: %d ms (%d runs)", firsts[runs/2], walls[runs/2], runs)
}

// TestARM64Guest boots the arm64 guest (what a Mac runs) under
// qemu-system-aarch64 and serves an ext4 image.
func TestARM64Guest(t *testing.T) {
	findGuest(t, "arm64")
	requireTools(t, "qemu-system-aarch64", "mkfs.ext4", "e2fsck")
	seed := seedTree(t)
	img := makeExt4(t, t.TempDir(), seed)
	b := boot(t, img, bootOpts{arch: "arm64", fstype: "ext4"})
	if b.s.Hello.Arch != "arm64" {
		t.Errorf("guest says arch %q", b.s.Hello.Arch)
	}
	if d := diffTrees(seed, readTree(t, b.mnt, map[string]bool{"lost+found": true})); len(d) > 0 {
		t.Fatalf("arm64 guest serves a different tree:\n%s", strings.Join(d, "\n"))
	}
	if err := os.WriteFile(filepath.Join(b.mnt, "from-arm64"), []byte("hi"), 0o644); err != nil {
		t.Fatal(err)
	}
	b.stop(t)
	run(t, "e2fsck", "-fn", img)
	if got := run(t, "debugfs", "-R", "cat /from-arm64", img); !strings.Contains(got, "hi") {
		t.Fatalf("file written by the arm64 guest missing: %q", got)
	}
	if tl, ok := timeline(b.console); ok {
		t.Logf("arm64 boot %v; guest timeline (ms): %v", b.bootTime.Round(time.Millisecond), tl)
	}
}

// qemuPIDs lists the live QEMU processes whose command line mentions
// stateDir.
func qemuPIDs(t *testing.T, stateDir string) []int {
	t.Helper()
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.HasPrefix(filepath.Base(strings.SplitN(string(b), "\x00", 2)[0]), "qemu-system") &&
			strings.Contains(string(b), stateDir) && processAlive(pid) {
			out = append(out, pid)
		}
	}
	return out
}
