package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hugelgupf/p9/p9"
	"github.com/qmount/qmount/guests"
	"github.com/qmount/qmount/initramfs"
	"github.com/qmount/qmount/internal/wire"
	"github.com/qmount/qmount/session"
	"github.com/qmount/qmount/vmm"
	_ "github.com/qmount/qmount/vmm/qemu"
)

// These tests boot real guests under QEMU (TCG on the CI machines) on
// images made by the real mkfs tools, and talk 9P to the guest agent.

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (scripts/install-deps.sh installs it)", tool)
		}
	}
}

func qemuFor(arch string) string {
	if arch == "arm64" {
		return "qemu-system-aarch64"
	}
	return "qemu-system-x86_64"
}

// builtGuest loads build/guests/NAME/ARCH or skips saying how to build it.
func builtGuest(t *testing.T, name, arch string) *guests.Built {
	t.Helper()
	b, err := guests.Load(filepath.Join(repoRoot(t), "build", "guests", name, arch))
	if err != nil {
		t.Skipf("guest %s/%s not built (make guest GUEST=%s ARCH=%s): %v", name, arch, name, arch, err)
	}
	needTools(t, qemuFor(arch))
	return b
}

// image makes a filesystem image of type fs (mkfs tool names) in dir.
func image(t *testing.T, dir, fs string) string {
	t.Helper()
	img := filepath.Join(dir, fs+".img")
	size := int64(64 << 20)
	if fs == "xfs" || fs == "btrfs" || fs == "ntfs" {
		size = 300 << 20 // their minimums
	}
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(size)
	f.Close()
	var cmd []string
	switch fs {
	case "ext4":
		cmd = []string{"mkfs.ext4", "-q", "-F", "-L", "qmt", img}
	case "btrfs":
		cmd = []string{"mkfs.btrfs", "-q", "-f", "-L", "qmt", img}
	case "xfs":
		cmd = []string{"mkfs.xfs", "-q", "-f", "-L", "qmt", img}
	case "vfat":
		cmd = []string{"mkfs.vfat", "-n", "QMT", img}
	case "exfat":
		cmd = []string{"mkfs.exfat", "-L", "qmt", img}
	case "ntfs":
		cmd = []string{"mkntfs", "-q", "-F", "-f", "-L", "qmt", img}
	default:
		t.Fatalf("no mkfs for %s", fs)
	}
	needTools(t, cmd[0])
	if out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd, " "), err, out)
	}
	return img
}

// served is a guest serving one image over 9P.
type served struct {
	s       *session.Session
	root    p9.File
	client  *p9.Client
	console string
	took    time.Duration
}

// serve boots g on img, asks it to mount fstype read-write and attaches
// to its 9P server.
func serve(t *testing.T, g *guests.Built, img, fstype string) *served {
	t.Helper()
	drv, err := vmm.Get("qemu")
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	console := filepath.Join(state, "console.log")
	mem := 256
	if g.Arch == "arm64" {
		mem = 512
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	s, err := session.Start(ctx, session.Config{
		Driver: drv,
		Machine: vmm.Config{
			Kernel: g.Kernel, Initrd: g.Initrd, Arch: g.Arch, MemoryMiB: mem, CPUs: 1,
			ConsoleLog: console, StateDir: state,
			Disks: []vmm.Disk{{Path: img, Serial: wire.DiskSerial(0)}},
		},
		Mount:  wire.MountRequest{Disks: []string{wire.DiskSerial(0)}, FSType: fstype},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatalf("booting %s/%s on %s (-t %s): %v\nconsole:\n%s", g.Name, g.Arch, filepath.Base(img), fstype, err, tail(console))
	}
	sv := &served{s: s, console: console, took: time.Since(start)}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	conn, err := s.DialNineP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sv.client, err = p9.NewClient(conn, p9.WithMessageSize(1<<20)); err != nil {
		t.Fatal(err)
	}
	if sv.root, err = sv.client.Attach("/"); err != nil {
		t.Fatal(err)
	}
	return sv
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-40):], "\n")
}

// writeFile creates name in the root over 9P, writes data and fsyncs.
func (sv *served) writeFile(t *testing.T, name string, data []byte) {
	t.Helper()
	_, dir, err := sv.root.Walk(nil)
	if err != nil {
		t.Fatal(err)
	}
	f, _, _, err := dir.Create(name, p9.WriteOnly, 0o644, p9.NoUID, p9.NoGID)
	if err != nil {
		t.Fatalf("creating %s over 9P: %v\nconsole:\n%s", name, err, tail(sv.console))
	}
	defer f.Close()
	if n, err := f.WriteAt(data, 0); err != nil || n != len(data) {
		t.Fatalf("writing %s over 9P: %d, %v", name, n, err)
	}
	if err := f.FSync(); err != nil {
		t.Fatalf("fsync %s over 9P: %v", name, err)
	}
}

// readFile reads name from the root over 9P.
func (sv *served) readFile(t *testing.T, name string) []byte {
	t.Helper()
	_, f, err := sv.root.Walk([]string{name})
	if err != nil {
		t.Fatalf("walking to %s over 9P: %v", name, err)
	}
	defer f.Close()
	if _, _, err := f.Open(p9.ReadOnly); err != nil {
		t.Fatal(err)
	}
	var out []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := f.ReadAt(buf, int64(len(out)))
		out = append(out, buf[:n]...)
		if err == io.EOF || n == 0 {
			return out
		}
		if err != nil {
			t.Fatalf("reading %s over 9P: %v", name, err)
		}
	}
}

// stop shuts the guest down cleanly (sync, unmount, power off).
func (sv *served) stop(t *testing.T) {
	t.Helper()
	sv.client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := sv.s.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v\nconsole:\n%s", err, tail(sv.console))
	}
}

// hostRead reads a file from an image with host tools, where they exist
// for the filesystem ("" and false when they do not).
func hostRead(t *testing.T, fs, img, name string) (string, bool) {
	t.Helper()
	var cmd []string
	switch fs {
	case "ext4":
		cmd = []string{"debugfs", "-R", "cat /" + name, img}
	case "ntfs":
		cmd = []string{"ntfscat", img, name}
	case "vfat":
		cmd = []string{"mtype", "-i", img, "::/" + name}
	default:
		return "", false
	}
	needTools(t, cmd[0])
	var stdout, stderr bytes.Buffer
	c := exec.Command(cmd[0], cmd[1:]...)
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(cmd, " "), err, stderr.String())
	}
	return stdout.String(), true
}

// roundTrip boots g on a new fs image mounted as fstype, writes a file
// over 9P, reads it back, shuts down and checks the file in the image.
// With seed, an NTFS image gets a file (ntfscp) before the boot, which is
// read back over 9P too.
func roundTrip(t *testing.T, g *guests.Built, fs, fstype string, seed bool) time.Duration {
	t.Helper()
	img := image(t, t.TempDir(), fs)
	const seedText = "written by ntfscp on the host\n"
	if seed {
		needTools(t, "ntfscp")
		src := filepath.Join(t.TempDir(), "seed.txt")
		os.WriteFile(src, []byte(seedText), 0o644)
		if out, err := exec.Command("ntfscp", img, src, "seed.txt").CombinedOutput(); err != nil {
			t.Fatalf("ntfscp: %v: %s", err, out)
		}
	}
	payload := []byte(strings.Repeat(fmt.Sprintf("qmount %s guest %s/%s\n", fstype, g.Name, g.Arch), 2000))
	sv := serve(t, g, img, fstype)
	if got := sv.s.Mounted.FSType; got != fstype {
		t.Errorf("guest mounted %q, want %q", got, fstype)
	}
	if seed {
		if got := sv.readFile(t, "seed.txt"); string(got) != seedText {
			t.Errorf("seed file over 9P: %q", got)
		}
	}
	sv.writeFile(t, "hello.txt", payload)
	if got := sv.readFile(t, "hello.txt"); !bytes.Equal(got, payload) {
		t.Fatalf("read back %d bytes, want %d", len(got), len(payload))
	}
	sv.stop(t)
	if got, ok := hostRead(t, fs, img, "hello.txt"); ok && got != string(payload) {
		t.Errorf("file in the image: %d bytes, want %d", len(got), len(payload))
	}
	return sv.took
}

// TestShippedGuestsServe boots the built packaged-kernel guests: linux and
// linux-6.12 on both architectures serve ext4 (arm64 under
// qemu-system-aarch64 -M virt, TCG), and linux-6.12 mounts NTFS
// read-write with the kernel's ntfs3 driver.
func TestShippedGuestsServe(t *testing.T) {
	tests := []struct {
		guest, arch, fs, fstype string
	}{
		{"linux", "arm64", "ext4", "ext4"},
		{"linux-6.12", "amd64", "ext4", "ext4"},
		{"linux-6.12", "arm64", "ext4", "ext4"},
		{"linux-6.12", "amd64", "ntfs", "ntfs3"},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s/%s/%s", tc.guest, tc.arch, tc.fstype), func(t *testing.T) {
			g := builtGuest(t, tc.guest, tc.arch)
			took := roundTrip(t, g, tc.fs, tc.fstype, false)
			t.Logf("%s/%s (%s): boot + mount %s in %v", tc.guest, tc.arch, g.Manifest.Kernel.Release, tc.fstype, took.Round(time.Millisecond))
		})
	}
}

// TestMiniGuestServes checks the mini guest (make guest GUEST=mini
// [ARCH=arm64]: a compiled kernel, so it is opt-in) on every filesystem it
// serves, for each architecture it is built for.
func TestMiniGuestServes(t *testing.T) {
	for _, arch := range []string{"amd64", "arm64"} {
		t.Run(arch, func(t *testing.T) {
			g := builtGuest(t, "mini", arch)
			if len(g.Manifest.Initramfs.Modules) != 0 {
				t.Errorf("mini ships modules %v; its kernel has everything built in", g.Manifest.Initramfs.Modules)
			}
			for _, tc := range []struct{ fs, fstype string }{
				{"ext4", "ext4"}, {"btrfs", "btrfs"}, {"xfs", "xfs"}, {"vfat", "vfat"}, {"exfat", "exfat"}, {"ntfs", "ntfs3"},
			} {
				t.Run(tc.fstype, func(t *testing.T) {
					// Linux 6.1's ntfs3 cannot create the first file on a
					// volume fresh from mkntfs ("no free space to extend
					// mft"); any volume that has had a file written works.
					took := roundTrip(t, g, tc.fs, tc.fstype, tc.fs == "ntfs")
					t.Logf("mini/%s (%s): boot + mount %s in %v", g.Arch, g.Manifest.Kernel.Release, tc.fstype, took.Round(time.Millisecond))
				})
			}
		})
	}
}

// TestCustomGuest defines a guest in a temporary directory, builds it with
// `make guest GUEST=custom DEFS=DIR` (reusing the cached Debian
// kernel, with a subset of its modules), checks its artifacts, and mounts
// an ext4 image through it.
func TestCustomGuest(t *testing.T) {
	needDebianTools(t)
	needTools(t, "qemu-system-x86_64", "mkfs.ext4")
	if guests.HostArch() != "amd64" {
		t.Skip("the custom guest is defined for amd64")
	}
	root := repoRoot(t)
	defs, guestDir := t.TempDir(), t.TempDir()
	out := filepath.Join(guestDir, "custom", "amd64")
	os.MkdirAll(filepath.Join(defs, "custom"), 0o755)
	def := `{
  "name": "custom",
  "description": "ext4 only, few modules",
  "kernel": {"amd64": {"debian": "linux-image-amd64"}},
  "boot_modules": ["virtio_mmio", "virtio_blk", "virtio_console"],
  "modules": ["virtio_mmio", "virtio_blk", "virtio_console"],
  "filesystems": {"ext4": {"modules": ["crc32c_generic", "ext4"]}},
  "boot_ms": {"amd64": 1000}
}`
	if err := os.WriteFile(filepath.Join(defs, "custom", guests.DefFile), []byte(def), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("make", "--no-print-directory", "guest", "GUEST=custom", "ARCH=amd64", "DEFS="+defs, "GUESTDIR="+guestDir)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make guest GUEST=custom DEFS=%s: %v\n%s", defs, err, b)
	}

	g, err := guests.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	m := g.Manifest
	if m.Name != "custom" || m.Arch != "amd64" || m.Kernel.Format != "vmlinux-pvh" || m.Kernel.PVHEntry == 0 {
		t.Errorf("manifest %+v", m)
	}
	for _, fi := range []initramfs.FileInfo{m.Kernel.FileInfo, m.Initramfs.FileInfo} {
		if d, err := initramfs.Describe(filepath.Join(out, fi.File)); err != nil || d != fi {
			t.Errorf("%s: on disk %+v (%v), manifest %+v", fi.File, d, err, fi)
		}
	}
	// Only the subset: ext4 and what it needs, no other filesystem.
	if !slices.Contains(m.Initramfs.Modules, "ext4") || slices.Contains(m.Initramfs.Modules, "btrfs") || slices.Contains(m.Initramfs.Modules, "xfs") {
		t.Errorf("modules %v", m.Initramfs.Modules)
	}
	if g.Def == nil || g.Def.Name != "custom" || !slices.Equal(g.Def.FSTypes(), []string{"ext4"}) {
		t.Errorf("built definition %+v", g.Def)
	}
	info := guestInfoIn(t, filepath.Join(out, m.Initramfs.File))
	if !slices.Equal(info.ModulesFor("ext4"), []string{"crc32c_generic", "ext4"}) || info.Kernel != m.Kernel.Release ||
		!slices.Equal(info.BootModules, []string{"virtio_mmio", "virtio_blk", "virtio_console"}) {
		t.Errorf("guest info %+v", info)
	}

	// Selection finds it (fastest) once it is in a guest root.
	t.Setenv(guests.EnvDefs, defs)
	guestRoot := t.TempDir()
	if err := os.MkdirAll(filepath.Join(guestRoot, "custom"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(out, filepath.Join(guestRoot, "custom", "amd64")); err != nil {
		t.Fatal(err)
	}
	t.Setenv(guests.EnvDirs, guestRoot)
	cat, err := guests.LoadCatalogue()
	if err != nil {
		t.Fatal(err)
	}
	ch, err := guests.Select("ext4", guests.SelectOptions{Arch: "amd64"}, cat)
	if err != nil || ch.Def.Name != "custom" {
		t.Fatalf("Select(ext4) = %+v, %v", ch, err)
	}

	took := roundTrip(t, ch.Built, "ext4", ch.FSType, false)
	t.Logf("custom guest: boot + mount ext4 in %v", took.Round(time.Millisecond))
}

// TestMeasureBoot measures, for each built guest, the boot time that
// definitions record as boot_ms: QEMU start to the mount being served
// (host wall time) on an ext4 image, median of 5 runs. It is a measurement,
// not a check: set QMOUNT_MEASURE_GUESTS=1 to run it.
func TestMeasureBoot(t *testing.T) {
	if os.Getenv("QMOUNT_MEASURE_GUESTS") == "" {
		t.Skip("a measurement: set QMOUNT_MEASURE_GUESTS=1 to run it")
	}
	needTools(t, "mkfs.ext4")
	img := image(t, t.TempDir(), "ext4")
	for _, name := range []string{"linux", "linux-6.12", "mini"} {
		for _, arch := range []string{"amd64", "arm64"} {
			t.Run(name+"/"+arch, func(t *testing.T) {
				g := builtGuest(t, name, arch)
				var walls, first []int
				for range 5 {
					sv := serve(t, g, img, "ext4")
					sv.stop(t)
					walls = append(walls, int(sv.took.Milliseconds()))
					b, _ := os.ReadFile(sv.console)
					for _, l := range strings.Split(string(b), "\n") {
						if _, rest, ok := strings.Cut(l, "first 9P byte at "); ok {
							var ms int
							fmt.Sscanf(rest, "%d", &ms)
							first = append(first, ms)
						}
					}
				}
				slices.Sort(walls)
				slices.Sort(first)
				t.Logf("%s/%s %s: host start->mounted median %d ms %v; guest first 9P byte %v ms",
					name, arch, g.Manifest.Kernel.Release, walls[len(walls)/2], walls, first)
			})
		}
	}
}
