package qemu

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// binaries maps a guest arch to its QEMU binary and the Debian package
// that ships it.
var binaries = map[string]struct{ name, pkg string }{
	"amd64": {"qemu-system-x86_64", "qemu-system-x86"},
	"arm64": {"qemu-system-aarch64", "qemu-system-arm"},
}

// findBinary returns the QEMU binary for a guest arch.
func findBinary(arch string) (string, error) {
	b, ok := binaries[arch]
	if !ok {
		return "", fmt.Errorf("finding qemu: guest arch %q is not supported (want amd64 or arm64)", arch)
	}
	p, err := exec.LookPath(b.name)
	if err != nil {
		return "", fmt.Errorf("finding qemu: %s is not installed (Debian/Ubuntu package %s): %w", b.name, b.pkg, err)
	}
	return p, nil
}

// qemuInfo is what the driver learns once per binary.
type qemuInfo struct {
	version  string          // first line of --version
	machines map[string]bool // -machine help
}

func describeBinary(ctx context.Context, bin string) (*qemuInfo, error) {
	out, err := exec.CommandContext(ctx, bin, "-machine", "help").Output()
	if err != nil {
		return nil, fmt.Errorf("listing qemu machine types: %w", err)
	}
	info := &qemuInfo{machines: map[string]bool{}}
	for _, l := range strings.Split(string(out), "\n")[1:] {
		if f := strings.Fields(l); len(f) > 0 {
			info.machines[f[0]] = true
		}
	}
	v, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("reading qemu version: %w", err)
	}
	info.version, _, _ = strings.Cut(string(v), "\n")
	return info, nil
}

// gatherFacts reads what accelerator selection needs from this host.
func gatherFacts(guestArch string) HostFacts {
	f := HostFacts{
		GOOS:      runtime.GOOS,
		HostArch:  runtime.GOARCH,
		GuestArch: guestArch,
		Env:       os.Getenv(AccelEnv),
	}
	if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil {
		f.KVMPVM = true
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		ci := ParseCPUInfo(string(b))
		f.VMX, f.SVM, f.Hypervisor = ci.Flags["vmx"], ci.Flags["svm"], ci.Flags["hypervisor"]
	}
	kvm, err := os.OpenFile("/dev/kvm", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return f
	}
	defer kvm.Close()
	f.KVMOpenable = true
	const (
		kvmGetAPIVersion  = 0xAE00
		kvmCheckExtension = 0xAE03
		kvmAPIVersion     = 12
		kvmCapIRQChip     = 0
		kvmCapUserMemory  = 3
		kvmCapSyncMMU     = 16
		kvmCapArmPSCI02   = 102
	)
	fd := int(kvm.Fd())
	v, err := unix.IoctlRetInt(fd, kvmGetAPIVersion)
	if err != nil || v != kvmAPIVersion {
		return f
	}
	caps := []int{kvmCapUserMemory, kvmCapSyncMMU}
	if runtime.GOARCH == "amd64" {
		caps = append(caps, kvmCapIRQChip)
	} else if runtime.GOARCH == "arm64" {
		caps = append(caps, kvmCapArmPSCI02)
	}
	for _, c := range caps {
		if r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), kvmCheckExtension, uintptr(c)); errno != 0 || r == 0 {
			return f
		}
	}
	f.KVMAPIOK = true
	return f
}

var (
	tscOnce sync.Once
	tscKHz  int64
)

// hostTSCKHz is the host TSC frequency in kHz (0 when unknown): from
// sysfs, /proc/cpuinfo, or else measured for 20 ms, once per process.
// x86 guests under TCG need it: microvm has no HPET or PM timer to
// calibrate the TSC against, and without tsc_early_khz the guest marks the
// TSC unstable and makes no progress (measured with Debian's 6.1 kernel).
func hostTSCKHz() int64 {
	tscOnce.Do(func() {
		if b, err := os.ReadFile("/sys/devices/system/cpu/cpu0/tsc_freq_khz"); err == nil {
			if v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && v > 0 {
				tscKHz = v
				return
			}
		}
		if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
			if tscKHz = TSCKHz(ParseCPUInfo(string(b))); tscKHz > 0 {
				return
			}
		}
		tscKHz = measureTSCKHz(20 * time.Millisecond)
	})
	return tscKHz
}

// vsockUsable reports whether vhost-vsock works here: /dev/vhost-vsock
// opens read-write and the host has AF_VSOCK sockets.
func vsockUsable() bool {
	f, err := os.OpenFile("/dev/vhost-vsock", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	f.Close()
	s, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	unix.Close(s)
	return true
}

// hostRelease is the host kernel release (uname -r).
func hostRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return string(bytes.TrimRight(u.Release[:], "\x00"))
}

// cidInUse reports whether QEMU failed because the guest CID is taken.
func cidInUse(stderr string) bool {
	return strings.Contains(stderr, "Address already in use") && strings.Contains(stderr, "cid")
}
