//go:build linux

// Command testinit is the /init of the tiny guest the qemu driver's boot
// test builds: it loads the modules packed in /modules, opens the
// virtio-serial port named qmount.ctl, writes a hello line, reports each
// virtio disk (serial, first line, read-only flag, whether a write at
// offset 4096 works), echoes one line from the host and powers off.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const portName = "qmount.ctl"

func main() {
	if err := run(); err != nil {
		logf("testinit: %v", err)
	}
	unix.Sync()
	powerOff()
}

func run() error {
	for _, m := range []struct{ src, dst, fstype string }{
		{"devtmpfs", "/dev", "devtmpfs"},
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
	} {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.src, m.dst, m.fstype, 0, ""); err != nil {
			return fmt.Errorf("mounting %s: %w", m.dst, err)
		}
	}
	if cmdline, _ := os.ReadFile("/proc/cmdline"); strings.Contains(string(cmdline), "qmount.test.panic=1") {
		os.Exit(3) // PID 1 exiting panics the kernel
	}
	if err := loadModules("/modules"); err != nil {
		return err
	}
	dev, err := findPort(portName, 30*time.Second)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", dev, err)
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "hello from %s uptime_ms=%d\n", runtime.GOARCH, uptimeMS()); err != nil {
		return fmt.Errorf("writing hello: %w", err)
	}
	for _, d := range disks() {
		fmt.Fprintln(f, d)
	}
	fmt.Fprintln(f, "ready")
	// Reading a virtio port returns EOF while the host side is closed;
	// retry until a line arrives.
	r := bufio.NewReader(f)
	deadline := time.Now().Add(30 * time.Second)
	var line string
	for {
		s, err := r.ReadString('\n')
		line += s
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("reading from host: %w", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := fmt.Fprintf(f, "echo: %s", line); err != nil {
		return fmt.Errorf("writing echo: %w", err)
	}
	return nil
}

// loadModules loads dir/*.ko, in passes until no more load: a module
// whose dependencies are not loaded yet fails and is retried.
func loadModules(dir string) error {
	left, _ := filepath.Glob(filepath.Join(dir, "*.ko"))
	for len(left) > 0 {
		var failed []string
		var last error
		for _, name := range left {
			f, err := os.Open(name)
			if err != nil {
				return err
			}
			err = unix.FinitModule(int(f.Fd()), "", 0)
			f.Close()
			if err != nil && !errors.Is(err, unix.EEXIST) {
				failed = append(failed, name)
				last = fmt.Errorf("loading %s: %w", name, err)
			}
		}
		if len(failed) == len(left) {
			return last
		}
		left = failed
	}
	return nil
}

// disks describes every virtio disk as
// "disk SERIAL first=LINE ro=0|1 write=ok|ERROR", waiting up to 10 s for
// them to appear.
func disks() []string {
	deadline := time.Now().Add(10 * time.Second)
	var out []string
	for {
		out = out[:0]
		ms, _ := filepath.Glob("/sys/block/vd*")
		for _, m := range ms {
			serial, _ := os.ReadFile(m + "/serial")
			ro, _ := os.ReadFile(m + "/ro")
			dev := "/dev/" + filepath.Base(m)
			first := "?"
			if f, err := os.Open(dev); err == nil {
				b := make([]byte, 64)
				n, _ := f.Read(b)
				first, _, _ = strings.Cut(string(b[:n]), "\n")
				f.Close()
			}
			out = append(out, fmt.Sprintf("disk %s first=%s ro=%s write=%s",
				strings.TrimSpace(string(serial)), first, strings.TrimSpace(string(ro)), tryWrite(dev)))
		}
		if len(out) >= wantDisks() || time.Now().After(deadline) {
			return out
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wantDisks is the qmount.test.disks=N boot parameter.
func wantDisks() int {
	b, _ := os.ReadFile("/proc/cmdline")
	for _, f := range strings.Fields(string(b)) {
		if v, ok := strings.CutPrefix(f, "qmount.test.disks="); ok {
			var n int
			fmt.Sscan(v, &n)
			return n
		}
	}
	return 0
}

func tryWrite(dev string) string {
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		return "open-failed"
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("written-by-guest\n"), 4096); err != nil {
		return "write-failed"
	}
	if err := f.Sync(); err != nil {
		return "sync-failed"
	}
	return "ok"
}

func findPort(name string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		ms, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
		for _, m := range ms {
			b, err := os.ReadFile(m)
			if err == nil && strings.TrimSpace(string(b)) == name {
				return "/dev/" + filepath.Base(filepath.Dir(m)), nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no virtio port named %s", name)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func uptimeMS() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return -1
	}
	return ts.Nano() / 1e6
}

func logf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0); err == nil {
		fmt.Fprintln(f, msg)
		f.Close()
		return
	}
	fmt.Fprintln(os.Stderr, msg)
}

func powerOff() {
	// x86 guests run with -no-reboot: a reboot request makes QEMU exit
	// (microvm has no ACPI to power off with). PSCI powers arm64 off.
	cmd := unix.LINUX_REBOOT_CMD_POWER_OFF
	if runtime.GOARCH == "amd64" {
		cmd = unix.LINUX_REBOOT_CMD_RESTART
	}
	for {
		unix.Reboot(cmd)
		time.Sleep(time.Second)
	}
}
