//go:build linux

package e2e

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qmount/qmount/guests"
	"github.com/qmount/qmount/internal/wire"
	"github.com/qmount/qmount/session"
	"github.com/qmount/qmount/vmm"
)

// The storage tests run in the linux-storage guest (cryptsetup, lvm2,
// mdadm, btrfs-progs, ntfs-3g, busybox). The host kernel may have neither
// device-mapper nor md, so LUKS, LVM and RAID images are built inside a
// guest with session.Exec, as `qmount shell -c` does.

const storageGuest = "linux-storage"

func findStorageGuest(t *testing.T, arch string) *guests.Built {
	t.Helper()
	t.Setenv(guests.EnvDirs, filepath.Join(repoRoot(t), "build", "guests"))
	g, err := guests.Find(storageGuest, arch)
	if err != nil {
		t.Skipf("no built %s guest for %s (make guests): %v", storageGuest, arch, err)
	}
	return g
}

// syncBuffer collects log output from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// stDisk is an image attached to a storage test guest.
type stDisk struct {
	path   string
	format string // "" = raw
}

type stVM struct {
	t       *testing.T
	g       *guests.Built
	state   string
	console string
	logs    *syncBuffer
	mem     int
}

func newVM(t *testing.T) *stVM { return newVMArch(t, hostArch()) }

func newVMArch(t *testing.T, arch string) *stVM {
	g := findStorageGuest(t, arch)
	state := t.TempDir()
	return &stVM{t: t, g: g, state: state, console: filepath.Join(state, "console.log"), logs: &syncBuffer{}, mem: 256}
}

func (v *stVM) config(disks []stDisk, ro bool) session.Config {
	drv, err := vmm.Get("qemu")
	if err != nil {
		v.t.Fatal(err)
	}
	cfg := session.Config{
		Driver: drv,
		Machine: vmm.Config{
			Kernel: v.g.Kernel, Initrd: v.g.Initrd, Arch: v.g.Arch,
			MemoryMiB: v.mem, CPUs: 1, ConsoleLog: v.console, StateDir: v.state,
		},
		Logger: slog.New(slog.NewTextHandler(io.MultiWriter(v.logs, testWriter{v.t}), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if v.g.Arch == "arm64" && cfg.Machine.MemoryMiB < 512 {
		cfg.Machine.MemoryMiB = 512
	}
	for i, d := range disks {
		serial := wire.DiskSerial(i)
		cfg.Machine.Disks = append(cfg.Machine.Disks, vmm.Disk{Path: d.path, Format: d.format, ReadOnly: ro, Serial: serial})
		cfg.Mount.Disks = append(cfg.Mount.Disks, serial)
	}
	return cfg
}

// sh runs script in a guest with disks attached as
// /dev/disk/qmount/qmount0... and returns its output; it fails the test
// unless the script exits 0.
func (v *stVM) sh(disks []stDisk, script string) string {
	v.t.Helper()
	out, code, err := v.exec(disks, script)
	if err != nil || code != 0 {
		v.t.Fatalf("guest script failed (status %d, %v):\n%s\n%s", code, err, out, tail(v.console))
	}
	return out
}

func (v *stVM) exec(disks []stDisk, script string) (string, int, error) {
	cfg := v.config(disks, false)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out syncBuffer
	code, err := session.Exec(ctx, cfg, wire.ExecRequest{Args: []string{"sh", "-c", "set -e\n" + script}, Disks: cfg.Mount.Disks}, nil, &out)
	return out.String(), code, err
}

// mount boots a guest for req over disks and mounts it with FUSE.
func (v *stVM) mount(disks []stDisk, req wire.MountRequest, pass func(ctx context.Context, dev, kind string, attempt int) (string, error)) (*booted, error) {
	t := v.t
	cfg := v.config(disks, req.ReadOnly)
	serials := cfg.Mount.Disks
	cfg.Mount = req
	cfg.Mount.Disks = serials
	cfg.Passphrase = pass
	return startMounted(t, cfg, v.state, v.console)
}

func (v *stVM) mustMount(disks []stDisk, req wire.MountRequest, pass func(ctx context.Context, dev, kind string, attempt int) (string, error)) *booted {
	v.t.Helper()
	b, err := v.mount(disks, req, pass)
	if err != nil {
		v.t.Fatalf("mount: %v\n%s", err, tail(v.console))
	}
	return b
}

func fixedPass(p string) func(context.Context, string, string, int) (string, error) {
	return func(context.Context, string, string, int) (string, error) { return p, nil }
}

// roundTrip writes a tree through a read-write mount of req, stops the
// guest, mounts again read-only and checks the tree is there.
func (v *stVM) roundTrip(disks []stDisk, req wire.MountRequest, pass func(context.Context, string, string, int) (string, error)) {
	t := v.t
	t.Helper()
	b := v.mustMount(disks, req, pass)
	if b.s.Mounted.ReadOnly {
		t.Fatalf("read-write mount came up read-only")
	}
	seed := seedTree(t)
	writeTree(t, b.mnt, seed)
	b.stop(t)
	ro := req
	ro.ReadOnly = true
	b = v.mustMount(disks, ro, pass)
	if !b.s.Mounted.ReadOnly {
		t.Errorf("read-only mount reported read-write")
	}
	got := readTree(t, b.mnt, map[string]bool{"lost+found": true})
	for _, d := range diffTrees(seed, onlyKeys(got, seed)) {
		t.Error(d)
	}
	b.stop(t)
}

// onlyKeys drops what the filesystem has besides the seeded tree.
func onlyKeys(got, want tree) tree {
	out := tree{}
	for k, v := range got {
		if _, ok := want[k]; ok {
			out[k] = v
		}
	}
	return out
}

func sparseFile(t *testing.T, path string, mib int64) stDisk {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(mib << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return stDisk{path: path}
}

// luksFormat formats img on the host (no device-mapper needed), the
// passphrase on stdin.
func luksFormat(t *testing.T, img, pass string, args ...string) {
	t.Helper()
	requireTools(t, "cryptsetup")
	a := append([]string{"luksFormat", "--batch-mode", "--key-file=-"}, args...)
	cmd := exec.Command("cryptsetup", append(a, img)...)
	cmd.Stdin = strings.NewReader(pass)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cryptsetup luksFormat: %v\n%s", err, out)
	}
}

// openLUKS is guest shell text opening disk 0 as /dev/mapper/c (a test
// passphrase: in a real shell, type it at cryptsetup's prompt).
func openLUKS(pass string) string {
	return "printf %s '" + pass + "' | cryptsetup open --key-file=- /dev/disk/qmount/qmount0 c\n"
}

// noSecret fails if the passphrase shows up in a log, the console or a
// process's command line.
func (v *stVM) noSecret(secret string) {
	v.t.Helper()
	if strings.Contains(v.logs.String(), secret) {
		v.t.Errorf("the passphrase is in the session log")
	}
	if b, _ := os.ReadFile(v.console); bytes.Contains(b, []byte(secret)) {
		v.t.Errorf("the passphrase is on the guest console")
	}
	if pids, err := filepath.Glob("/proc/[0-9]*/cmdline"); err == nil {
		for _, p := range pids {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(secret)) {
				v.t.Errorf("the passphrase is in %s: %q", p, b)
			}
		}
	}
}

func TestShellExec(t *testing.T) {
	v := newVM(t)
	img := sparseFile(t, filepath.Join(t.TempDir(), "d.img"), 8)
	out, code, err := v.exec([]stDisk{img}, `echo hello from $(uname -s); test -b /dev/disk/qmount/qmount0 && echo disk ok; exit 7`)
	if err != nil {
		t.Fatalf("exec: %v\n%s", err, tail(v.console))
	}
	if code != 7 {
		t.Errorf("exit status %d, want 7", code)
	}
	if !strings.Contains(out, "hello from Linux") || !strings.Contains(out, "disk ok") {
		t.Errorf("output %q", out)
	}
}

func TestLUKS(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		mem  int
	}{
		{"luks1", []string{"--type", "luks1", "--pbkdf-force-iterations", "1000"}, 256},
		{"luks2-pbkdf2", []string{"--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"}, 256},
		// argon2id with 256 MiB of memory cost needs a bigger VM.
		{"luks2-argon2id", []string{"--type", "luks2", "--pbkdf", "argon2id", "--pbkdf-memory", "262144", "--pbkdf-force-iterations", "4", "--pbkdf-parallel", "1"}, 768},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newVM(t)
			v.mem = tc.mem
			const pass = "correct horse battery staple 7Qz"
			img := sparseFile(t, filepath.Join(t.TempDir(), "luks.img"), 64)
			luksFormat(t, img.path, pass, tc.args...)
			v.sh([]stDisk{img}, openLUKS(pass)+"/usr/sbin/mke2fs -q -t ext4 /dev/mapper/c\ncryptsetup close c")
			v.logs = &syncBuffer{} // from here on the passphrase must never show
			var kinds []string
			pf := func(_ context.Context, dev, kind string, _ int) (string, error) {
				kinds = append(kinds, dev+" "+kind)
				v.noSecret(pass) // during the mount, before the guest has it
				return pass, nil
			}
			b := v.mustMount([]stDisk{img}, wire.MountRequest{}, pf)
			v.noSecret(pass)
			writeTree(t, b.mnt, tree{"secret.txt": []byte("inside luks\n")})
			b.stop(t)
			want := "qmount0 LUKS1"
			if tc.name != "luks1" {
				want = "qmount0 LUKS2"
			}
			if len(kinds) != 1 || kinds[0] != want {
				t.Errorf("passphrase asked for %q, want [%s]", kinds, want)
			}
			out := v.sh([]stDisk{img}, openLUKS(pass)+"mkdir -p /m && mount -o ro /dev/mapper/c /m && cat /m/secret.txt && umount /m && cryptsetup close c")
			if !strings.Contains(out, "inside luks") {
				t.Errorf("the file written through qmount is not in the LUKS volume: %q", out)
			}
			v.noSecret(pass)
		})
	}
}

func TestLUKSWrongPassphrase(t *testing.T) {
	v := newVM(t)
	img := sparseFile(t, filepath.Join(t.TempDir(), "luks.img"), 32)
	luksFormat(t, img.path, "right one", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000")
	attempts := 0
	_, err := v.mount([]stDisk{img}, wire.MountRequest{}, func(_ context.Context, _, _ string, attempt int) (string, error) {
		attempts = attempt
		return "wrong one", nil
	})
	var ge *session.GuestError
	if !errors.As(err, &ge) || ge.Step != wire.StepUnlock || ge.Text != wire.ErrWrongPassphrase {
		t.Fatalf("got %v, want a guest error %q at step %q", err, wire.ErrWrongPassphrase, wire.StepUnlock)
	}
	if attempts != 3 {
		t.Errorf("asked %d times, want 3", attempts)
	}
	for _, pid := range qemuPIDs(t, v.state) {
		if processAlive(pid) {
			t.Errorf("qemu %d still running after the failed mount", pid)
		}
	}
	// Declining to give one fails the same step.
	_, err = v.mount([]stDisk{img}, wire.MountRequest{}, nil)
	if !errors.As(err, &ge) || ge.Step != wire.StepUnlock {
		t.Fatalf("without a passphrase: %v", err)
	}
}

func TestLVM(t *testing.T) {
	v := newVM(t)
	dir := t.TempDir()
	img := sparseFile(t, filepath.Join(dir, "pv.img"), 64)
	v.sh([]stDisk{img}, `d=/dev/disk/qmount/qmount0
lvm pvcreate -q $d
lvm vgcreate -q vg0 $d
lvm lvcreate -q -L 16M -n alpha vg0
lvm lvcreate -q -L 16M -n beta vg0
/usr/sbin/mke2fs -q -t ext4 /dev/mapper/vg0-alpha
/usr/sbin/mke2fs -q -t ext4 /dev/mapper/vg0-beta
lvm vgchange -q -an vg0`)
	// Two LVs: the guest refuses to guess.
	_, err := v.mount([]stDisk{img}, wire.MountRequest{}, nil)
	if err == nil || !strings.Contains(err.Error(), "alpha, beta") {
		t.Errorf("mount without an LV: %v, want the list of LVs", err)
	}
	v.roundTrip([]stDisk{img}, wire.MountRequest{VG: "vg0", LV: "beta"}, nil)
	// alpha is untouched.
	b := v.mustMount([]stDisk{img}, wire.MountRequest{VG: "vg0", LV: "alpha", ReadOnly: true}, nil)
	if _, err := os.Stat(filepath.Join(b.mnt, "hello.txt")); err == nil {
		t.Errorf("the other LV has the files")
	}
	b.stop(t)
}

func TestLVMTwoDisks(t *testing.T) {
	v := newVM(t)
	dir := t.TempDir()
	disks := []stDisk{sparseFile(t, filepath.Join(dir, "a.img"), 32), sparseFile(t, filepath.Join(dir, "b.img"), 32)}
	v.sh(disks, `a=/dev/disk/qmount/qmount0 b=/dev/disk/qmount/qmount1
lvm pvcreate -q $a $b
lvm vgcreate -q big $a $b
lvm lvcreate -q -l 100%FREE -n data big
/usr/sbin/mke2fs -q -t ext4 /dev/mapper/big-data
lvm vgchange -q -an big`)
	v.roundTrip(disks, wire.MountRequest{VG: "big", LV: "data"}, nil)
}

func TestLVMOnLUKS(t *testing.T) {
	v := newVM(t)
	const pass = "lvm on luks pass"
	img := sparseFile(t, filepath.Join(t.TempDir(), "c.img"), 64)
	luksFormat(t, img.path, pass, "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000")
	v.sh([]stDisk{img}, openLUKS(pass)+`lvm pvcreate -q /dev/mapper/c
lvm vgcreate -q sec /dev/mapper/c
lvm lvcreate -q -l 100%FREE -n home sec
/usr/sbin/mke2fs -q -t ext4 /dev/mapper/sec-home
lvm vgchange -q -an sec
cryptsetup close c`)
	v.logs = &syncBuffer{}
	// The only LV is found without naming it.
	v.roundTrip([]stDisk{img}, wire.MountRequest{}, fixedPass(pass))
	v.noSecret(pass)
}

func TestRAID1(t *testing.T) {
	v := newVM(t)
	dir := t.TempDir()
	disks := []stDisk{sparseFile(t, filepath.Join(dir, "a.img"), 48), sparseFile(t, filepath.Join(dir, "b.img"), 48)}
	v.sh(disks, `mdadm --create -q /dev/md0 --level=1 --raid-devices=2 --metadata=1.2 --assume-clean --run /dev/disk/qmount/qmount0 /dev/disk/qmount/qmount1
/usr/sbin/mke2fs -q -t ext4 /dev/md0
mdadm --stop /dev/md0`)
	v.roundTrip(disks, wire.MountRequest{RAID: true}, nil)
	// One disk missing: still readable, read-only.
	b := v.mustMount(disks[1:], wire.MountRequest{RAID: true, ReadOnly: true}, nil)
	if got, err := os.ReadFile(filepath.Join(b.mnt, "hello.txt")); err != nil || len(got) == 0 {
		t.Errorf("degraded array: %v", err)
	}
	b.stop(t)
}

func TestBtrfsRAID1(t *testing.T) {
	requireTools(t, "mkfs.btrfs")
	v := newVM(t)
	dir := t.TempDir()
	disks := []stDisk{sparseFile(t, filepath.Join(dir, "a.img"), 128), sparseFile(t, filepath.Join(dir, "b.img"), 128)}
	run(t, "mkfs.btrfs", "-q", "-d", "raid1", "-m", "raid1", disks[0].path, disks[1].path)
	v.roundTrip(disks, wire.MountRequest{}, nil)
	out := run(t, "btrfs", "check", "--readonly", disks[0].path)
	if strings.Contains(out, "ERROR") {
		t.Errorf("btrfs check: %s", out)
	}
}

func TestNTFS3G(t *testing.T) {
	requireTools(t, "mkfs.ntfs", "ntfscat")
	v := newVM(t)
	img := sparseFile(t, filepath.Join(t.TempDir(), "ntfs.img"), 64)
	run(t, "mkfs.ntfs", "-q", "-F", "-Q", "-L", "win", img.path)
	b := v.mustMount([]stDisk{img}, wire.MountRequest{}, nil)
	if b.s.Mounted.FSType != "ntfs-3g" || b.s.Mounted.ReadOnly {
		t.Fatalf("mounted %q read-only=%v, want ntfs-3g read-write", b.s.Mounted.FSType, b.s.Mounted.ReadOnly)
	}
	data := randomBytes(t, 300<<10)
	writeTree(t, b.mnt, tree{"dir": nil, "dir/blob.bin": data})
	b.stop(t)
	got, err := exec.Command("ntfscat", img.path, "/dir/blob.bin").Output()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ntfscat on the host: %v (%d bytes, want %d)", err, len(got), len(data))
	}
}

func TestQCOW2ReadWrite(t *testing.T) {
	requireTools(t, "qemu-img", "debugfs")
	v := newVM(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "64M")
	disk := []stDisk{{path: img, format: "qcow2"}}
	v.sh(disk, "/usr/sbin/mke2fs -q -t ext4 /dev/disk/qmount/qmount0")
	b := v.mustMount(disk, wire.MountRequest{}, nil)
	writeTree(t, b.mnt, tree{"hello.txt": []byte("qcow2 works\n")})
	b.stop(t)
	raw := filepath.Join(dir, "disk.raw")
	run(t, "qemu-img", "convert", "-f", "qcow2", "-O", "raw", img, raw)
	if out := run(t, "debugfs", "-R", "cat /hello.txt", raw); !strings.Contains(out, "qcow2 works") {
		t.Errorf("debugfs cat: %q", out)
	}
}

// TestARM64LVMOnLUKS: the arm64 storage guest (its tools from an arm64
// sysroot) under qemu-system-aarch64 builds and mounts LVM on LUKS2.
func TestARM64LVMOnLUKS(t *testing.T) {
	requireTools(t, "qemu-system-aarch64")
	v := newVMArch(t, "arm64")
	const pass = "arm64 lvm on luks"
	img := sparseFile(t, filepath.Join(t.TempDir(), "c.img"), 64)
	luksFormat(t, img.path, pass, "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000")
	out := v.sh([]stDisk{img}, "uname -m\n"+openLUKS(pass)+`lvm pvcreate -q /dev/mapper/c
lvm vgcreate -q arm /dev/mapper/c
lvm lvcreate -q -l 100%FREE -n data arm
/usr/sbin/mke2fs -q -t ext4 /dev/mapper/arm-data
lvm vgchange -q -an arm
cryptsetup close c`)
	if !strings.Contains(out, "aarch64") {
		t.Fatalf("not an arm64 guest: %q", out)
	}
	v.logs = &syncBuffer{}
	v.roundTrip([]stDisk{img}, wire.MountRequest{VG: "arm", LV: "data"}, fixedPass(pass))
	v.noSecret(pass)
}
