package qemu

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/qmount/qmount/internal/wire"
	"github.com/qmount/qmount/vmm"
)

// testModules are the modules the test guest loads (when the kernel has
// them as modules): virtio transports, the console/serial ports, disks.
var testModules = map[string]bool{
	"virtio_ring": true, "virtio": true, "virtio_mmio": true,
	"virtio_pci_legacy_dev": true, "virtio_pci_modern_dev": true, "virtio_pci": true,
	"virtio_console": true, "virtio_blk": true,
}

// testGuest is a kernel with a test initramfs.
type testGuest struct {
	arch, kernel, initrd string
}

// repoRoot finds the module root from the test's directory.
func repoRoot(t *testing.T) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test directory")
		}
		dir = parent
	}
}

// guestFor builds the test guest for arch from the default guest in
// build/guests/linux/ARCH (made by `make guests`): its kernel, and an
// initramfs of testdata/testinit plus the virtio modules taken from the
// default guest's initramfs. It skips when the guest or QEMU is missing.
func guestFor(t *testing.T, arch string) testGuest {
	t.Helper()
	if _, err := exec.LookPath(binaries[arch].name); err != nil {
		t.Skipf("%s not installed (Debian package %s)", binaries[arch].name, binaries[arch].pkg)
	}
	root := repoRoot(t)
	dir := filepath.Join(root, "build", "guests", "linux", arch)
	kernel := filepath.Join(dir, "vmlinux")
	if arch == "arm64" {
		kernel = filepath.Join(dir, "Image")
	}
	src := filepath.Join(dir, "initramfs.cpio")
	for _, p := range []string{kernel, src} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("no %s guest: %v (run `make guests ARCH=%s`)", arch, err, arch)
		}
	}
	tmp := t.TempDir()
	initBin := filepath.Join(tmp, "init")
	build := exec.Command("go", "build", "-trimpath", "-o", initBin, "./vmm/qemu/testdata/testinit")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building testinit: %v\n%s", err, out)
	}
	initData, err := os.ReadFile(initBin)
	if err != nil {
		t.Fatal(err)
	}
	recs := []cpio.Record{
		cpio.Directory("dev", 0o755), cpio.Directory("proc", 0o755), cpio.Directory("sys", 0o755),
		cpio.Directory("modules", 0o755),
		cpio.CharDev("dev/console", 0o600, 5, 1), cpio.CharDev("dev/null", 0o666, 1, 3),
		cpio.StaticRecord(initData, cpio.Info{Name: "init", Mode: cpio.S_IFREG | 0o755}),
	}
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rr, err := cpio.Newc.NewFileReader(f)
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	err = cpio.ForEachRecord(rr, func(r cpio.Record) error {
		base := filepath.Base(r.Name)
		if name, ok := strings.CutSuffix(base, ".ko"); ok && testModules[name] {
			b, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
			if err != nil {
				return err
			}
			recs = append(recs, cpio.StaticRecord(b, cpio.Info{Name: "modules/" + base, Mode: cpio.S_IFREG | 0o644}))
			found++
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reading %s: %v", src, err)
	}
	t.Logf("%s guest: %d virtio modules from %s", arch, found, src)
	initrd := filepath.Join(tmp, "initrd.cpio")
	out, err := os.Create(initrd)
	if err != nil {
		t.Fatal(err)
	}
	w := cpio.Newc.Writer(out)
	if err := cpio.WriteRecords(w, recs); err != nil {
		t.Fatal(err)
	}
	if err := cpio.WriteTrailer(w); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return testGuest{arch: arch, kernel: kernel, initrd: initrd}
}

// stateDir is a short private directory (unix socket paths are limited).
func stateDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "qm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func makeDisk(t *testing.T, first string) string {
	p := filepath.Join(t.TempDir(), "disk.img")
	b := make([]byte, 1<<20)
	copy(b, first+"\n")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBoot(t *testing.T) {
	for _, arch := range []string{"amd64", "arm64"} {
		t.Run(arch, func(t *testing.T) {
			if arch != runtime.GOARCH && testing.Short() {
				t.Skip("cross-arch boot skipped in -short mode")
			}
			g := guestFor(t, arch)
			testBoot(t, g)
		})
	}
}

func testBoot(t *testing.T, g testGuest) {
	sd := stateDir(t)
	disk0 := makeDisk(t, "qmount-disk0")
	disk1 := makeDisk(t, "qmount-disk1")
	// disk1 is passed as an open file, opened read-write although the
	// guest gets it read-only: the driver must hand QEMU a read-only fd.
	f1, err := os.OpenFile(disk1, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f1.Close()
	cfg := vmm.Config{
		Kernel: g.kernel, Initrd: g.initrd, Arch: g.arch,
		Cmdline:   "qmount.test.disks=2",
		MemoryMiB: 256, CPUs: 1,
		Disks: []vmm.Disk{
			{Path: disk0, Serial: wire.DiskSerial(0)},
			{File: f1, ReadOnly: true, Serial: wire.DiskSerial(1)},
		},
		ConsoleLog: filepath.Join(sd, "console.log"),
		StateDir:   sd,
	}
	d := New(WithAccel(AccelTCG))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	t0 := time.Now()
	m, err := d.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Kill()
	started := time.Since(t0)
	conn, err := m.Dial(ctx, wire.ControlPort)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := m.Dial(ctx, wire.ControlPort); err == nil {
		t.Error("second Dial of the control port succeeded")
	}
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	r := bufio.NewReader(conn)
	if _, err := r.Peek(1); err != nil {
		t.Fatalf("reading hello: %v\nconsole:\n%s", err, tail(cfg.ConsoleLog, 2000))
	}
	firstByte := time.Since(t0)
	var lines []string
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading guest lines: %v (got %q)\nconsole:\n%s", err, lines, tail(cfg.ConsoleLog, 2000))
		}
		l = strings.TrimSpace(l)
		if l == "ready" {
			break
		}
		lines = append(lines, l)
	}
	t.Logf("%s: Start returned after %v, first guest byte after %v", g.arch, started.Round(time.Millisecond), firstByte.Round(time.Millisecond))
	t.Logf("guest said: %q", lines)
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "hello from "+g.arch) {
		t.Fatalf("no hello: %q", lines)
	}
	// The read-only disk may refuse the open or the write: either way
	// not "ok".
	want := map[string]bool{
		"disk qmount0 first=qmount-disk0 ro=0 write=ok":   false,
		"disk qmount1 first=qmount-disk1 ro=1 write=fail": false,
	}
	for _, l := range lines[1:] {
		l = strings.Replace(l, "write=open-failed", "write=fail", 1)
		l = strings.Replace(l, "write=write-failed", "write=fail", 1)
		if _, ok := want[l]; !ok {
			t.Errorf("unexpected disk line %q", l)
		}
		want[l] = true
	}
	for l, seen := range want {
		if !seen {
			t.Errorf("guest did not report %q", l)
		}
	}
	if _, err := conn.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	echo, err := r.ReadString('\n')
	if err != nil || echo != "echo: ping\n" {
		t.Fatalf("echo = %q, %v", echo, err)
	}
	if err := m.Wait(ctx); err != nil {
		t.Fatalf("Wait after power-off: %v", err)
	}
	t.Logf("%s: guest powered off %v after Start", g.arch, time.Since(t0).Round(time.Millisecond))

	b0, _ := os.ReadFile(disk0)
	if !bytes.HasPrefix(b0[4096:], []byte("written-by-guest\n")) {
		t.Error("the guest's write to the read-write disk is not in the image")
	}
	b1, _ := os.ReadFile(disk1)
	if !bytes.Equal(b1[4096:4096+16], make([]byte, 16)) {
		t.Error("the read-only disk was written")
	}
	assertGone(t, m, sd)
}

// assertGone checks that the QEMU process and its sockets are gone.
func assertGone(t *testing.T, m vmm.Machine, sd string) {
	t.Helper()
	if err := syscall.Kill(m.PID(), 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("qemu pid %d still exists: %v", m.PID(), err)
	}
	socks, _ := filepath.Glob(filepath.Join(sd, "*.sock"))
	if len(socks) > 0 {
		t.Errorf("sockets left behind: %v", socks)
	}
}

// hostGuest returns the test guest for the host's arch (skipping when it
// is missing).
func hostGuest(t *testing.T) testGuest {
	if _, ok := binaries[runtime.GOARCH]; !ok {
		t.Skipf("no qemu guest for host arch %s", runtime.GOARCH)
	}
	return guestFor(t, runtime.GOARCH)
}

func baseConfig(g testGuest, sd string) vmm.Config {
	return vmm.Config{
		Kernel: g.kernel, Initrd: g.initrd, Arch: g.arch,
		MemoryMiB: 256, CPUs: 1, StateDir: sd,
	}
}

func TestShutdownFallsBackToQuit(t *testing.T) {
	g := hostGuest(t)
	sd := stateDir(t)
	m, err := New(WithAccel(AccelTCG)).Start(context.Background(), baseConfig(g, sd))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Kill()
	// The test guest ignores the ACPI power button: Shutdown must stop
	// QEMU with QMP quit at the deadline, which exits cleanly.
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	err = m.Shutdown(ctx)
	if err == nil || !strings.Contains(err.Error(), "quit") {
		t.Fatalf("Shutdown = %v, want the quit fallback", err)
	}
	if err := m.Wait(context.Background()); err != nil {
		t.Fatalf("Wait after quit: %v", err)
	}
	assertGone(t, m, sd)
}

func TestWaitReportsPanic(t *testing.T) {
	g := hostGuest(t)
	sd := stateDir(t)
	cfg := baseConfig(g, sd)
	cfg.Cmdline = "qmount.test.panic=1"
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	m, err := New(WithAccel(AccelTCG)).Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Kill()
	// panic=-1 resets the guest and QEMU exits 0: Wait must still fail,
	// with the kernel's words.
	err = m.Wait(ctx)
	if err == nil || !strings.Contains(err.Error(), "panicked") || !strings.Contains(err.Error(), "Attempted to kill init") {
		t.Fatalf("Wait = %v, want the guest's panic", err)
	}
	t.Logf("Wait: %v", err)
	assertGone(t, m, sd)
}

func TestKill(t *testing.T) {
	g := hostGuest(t)
	sd := stateDir(t)
	m, err := New(WithAccel(AccelTCG)).Start(context.Background(), baseConfig(g, sd))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Kill(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Wait(ctx); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("Wait after Kill = %v", err)
	}
	// Every caller gets the same result.
	if err2 := m.Wait(ctx); err2 == nil || err2.Error() != m.Wait(ctx).Error() {
		t.Fatalf("second Wait = %v", err2)
	}
	if _, err := m.Dial(ctx, wire.NinePPort); err == nil {
		t.Error("Dial after exit succeeded")
	}
	assertGone(t, m, sd)
}

func TestStartErrors(t *testing.T) {
	g := hostGuest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d := New(WithAccel(AccelTCG))

	t.Run("missing kernel", func(t *testing.T) {
		cfg := baseConfig(g, stateDir(t))
		cfg.Kernel = filepath.Join(t.TempDir(), "vmlinux")
		_, err := d.Start(ctx, cfg)
		if err == nil || !strings.Contains(err.Error(), "kernel") {
			t.Fatalf("Start = %v", err)
		}
		t.Logf("Start: %v", err)
	})
	t.Run("qemu not installed", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		_, err := New(WithAccel(AccelTCG)).Start(ctx, baseConfig(g, stateDir(t)))
		if err == nil || !strings.Contains(err.Error(), binaries[g.arch].pkg) {
			t.Fatalf("Start = %v, want the package name %s", err, binaries[g.arch].pkg)
		}
		t.Logf("Start: %v", err)
	})
	t.Run("qemu fails", func(t *testing.T) {
		sd := stateDir(t)
		cfg := baseConfig(g, sd)
		// A disk path QEMU cannot open: QEMU exits during start and its
		// message must reach the caller, with nothing left behind.
		cfg.Disks = []vmm.Disk{{Path: filepath.Join(t.TempDir(), "missing.img"), Serial: wire.DiskSerial(0)}}
		_, err := d.Start(ctx, cfg)
		if err == nil || !strings.Contains(err.Error(), "missing.img") {
			t.Fatalf("Start = %v, want qemu's complaint about missing.img", err)
		}
		t.Logf("Start: %v", err)
		socks, _ := filepath.Glob(filepath.Join(sd, "*.sock"))
		if len(socks) > 0 {
			t.Errorf("sockets left behind: %v", socks)
		}
	})
}
