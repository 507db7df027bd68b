package initramfs

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"
)

// hostTSCkHz is the host's TSC frequency for tsc_early_khz=, which spares
// a TCG guest its TSC calibration; 0 when unknown.
func hostTSCkHz() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil || !bytes.Contains(b, []byte(" constant_tsc")) {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "cpu MHz" {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return int(f * 1000)
			}
		}
	}
	return 0
}

// TestBoot boots each built default guest (build/guests/linux/<arch>, made
// by `make guests`) under QEMU TCG with the built kernel and initramfs, its
// /init replaced by testdata/bootinit through a second concatenated cpio
// archive. The test init loads modules with the shipped modules.dep,
// prints what loaded, and powers off. Boot time (QEMU start to the init's
// first line) is logged.
func TestBoot(t *testing.T) {
	tests := []struct {
		arch, qemu string
		args       []string
		console    string
	}{
		{
			arch: "amd64", qemu: "qemu-system-x86_64",
			args:    []string{"-M", "microvm,rtc=on", "-cpu", "max", "-m", "256"},
			console: "console=ttyS0 earlyprintk=ttyS0 reboot=t",
		},
		{
			arch: "arm64", qemu: "qemu-system-aarch64",
			args:    []string{"-M", "virt", "-cpu", "cortex-a57", "-m", "512"},
			console: "console=ttyAMA0",
		},
	}
	for _, tc := range tests {
		t.Run(tc.arch, func(t *testing.T) {
			dir := filepath.Join(repoRoot(t), "build", "guests", "linux", tc.arch)
			m, err := ReadManifest(dir)
			if err != nil {
				t.Skipf("no built %s guest (make guests ARCH=%s): %v", tc.arch, tc.arch, err)
			}
			needTool(t, tc.qemu, map[string]string{"amd64": "qemu-system-x86", "arm64": "qemu-system-arm"}[tc.arch])
			initrd := overlayInit(t, filepath.Join(dir, m.Initramfs.File), testInit(t, tc.arch))
			cmdline := tc.console + " panic=-1 qmount.test.modules=ext4,btrfs,vfat,virtio_blk"
			if tc.arch == "amd64" {
				if khz := hostTSCkHz(); khz > 0 {
					cmdline += fmt.Sprintf(" tsc_early_khz=%d", khz)
				}
			}
			args := append(slices.Clone(tc.args),
				"-accel", "tcg", "-smp", "1", "-nodefaults", "-no-user-config", "-nographic",
				"-serial", "stdio", "-no-reboot",
				"-kernel", filepath.Join(dir, m.Kernel.File), "-initrd", initrd, "-append", cmdline)
			lines, took := bootQEMU(t, tc.qemu, args)
			var mods, fss []string
			for _, l := range lines {
				if rest, ok := strings.CutPrefix(l, "QMOUNT-MODULES "); ok {
					mods = strings.Fields(rest)
				}
				if rest, ok := strings.CutPrefix(l, "QMOUNT-FILESYSTEMS "); ok {
					fss = strings.Fields(rest)
				}
				if strings.HasPrefix(l, "QMOUNT-ERROR") {
					t.Error(l)
				}
			}
			for _, want := range []string{"ext4", "btrfs", "vfat"} {
				if !slices.Contains(fss, want) {
					t.Errorf("filesystem %s not registered after loading; /proc/filesystems: %v", want, fss)
				}
			}
			// ext4's pre-softdep, folded into modules.dep.
			if !slices.Contains(mods, "crc32c_generic") {
				t.Errorf("crc32c_generic not loaded with ext4; modules: %v", mods)
			}
			t.Logf("%s guest %s: QEMU start -> /init first line %s; modules loaded: %d", tc.arch, m.Kernel.Release, took.Round(time.Millisecond), len(mods))
		})
	}
}

// overlayInit returns a copy of the initramfs at base followed by a second
// archive whose /init is init; the kernel unpacks both, the later /init
// replacing the first.
func overlayInit(t *testing.T, base, init string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "initramfs.cpio")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	in, err := os.Open(base)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if _, err := io.Copy(f, in); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(init)
	if err != nil {
		t.Fatal(err)
	}
	w := cpio.Newc.Writer(f)
	if err := w.WriteRecord(cpio.StaticRecord(data, cpio.Info{Name: "init", Mode: cpio.S_IFREG | 0o755, NLink: 1})); err != nil {
		t.Fatal(err)
	}
	if err := cpio.WriteTrailer(w); err != nil {
		t.Fatal(err)
	}
	return out
}

// bootQEMU runs QEMU until it exits, and returns the console lines and the
// time from its start to the init's first line.
func bootQEMU(t *testing.T, qemu string, args []string) ([]string, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var (
		lines  []string
		marker time.Duration
		done   bool
	)
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		l := strings.TrimRight(sc.Text(), "\r")
		lines = append(lines, l)
		if strings.HasPrefix(l, "QMOUNT-BOOT-MARKER") && marker == 0 {
			marker = time.Since(start)
		}
		if l == "QMOUNT-DONE" {
			done = true
		}
	}
	err = cmd.Wait()
	if marker == 0 || !done {
		t.Fatalf("no marker from the guest (QEMU: %v); console:\n%s", err, strings.Join(lines, "\n"))
	}
	if err != nil {
		t.Errorf("QEMU did not exit cleanly after power-off: %v", err)
	}
	return lines, marker
}
