// Command bootinit is a tiny /init for the initramfs boot test: it prints
// a marker line to the console, loads the modules named on the kernel
// command line (qmount.test.modules=a,b) the way modprobe does from the
// shipped modules.dep (dependencies from the end of the list to its
// start, then the module), reports what got loaded, and powers off.
package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"path"
	"path/filepath"

	"golang.org/x/sys/unix"
)

func main() {
	con, err := os.OpenFile("/dev/console", os.O_WRONLY, 0)
	if err != nil {
		con = os.Stdout
	}
	fmt.Fprintf(con, "\nQMOUNT-BOOT-MARKER pid=%d\n", os.Getpid())
	if err := unix.Mount("proc", "/proc", "proc", 0, ""); err != nil {
		fmt.Fprintf(con, "QMOUNT-ERROR mount proc: %v\n", err)
	}
	start := time.Now()
	cmdline, _ := os.ReadFile("/proc/cmdline")
	for _, arg := range strings.Fields(string(cmdline)) {
		if v, ok := strings.CutPrefix(arg, "qmount.test.modules="); ok {
			for _, m := range strings.Split(v, ",") {
				if err := modprobe(m); err != nil {
					fmt.Fprintf(con, "QMOUNT-ERROR modprobe %s: %v\n", m, err)
				}
			}
		}
	}
	mods, _ := os.ReadFile("/proc/modules")
	var names []string
	for _, l := range strings.Split(string(mods), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	fss, _ := os.ReadFile("/proc/filesystems")
	var fsNames []string
	for _, l := range strings.Split(string(fss), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			fsNames = append(fsNames, f[len(f)-1])
		}
	}
	fmt.Fprintf(con, "QMOUNT-MODULES %s\n", strings.Join(names, " "))
	fmt.Fprintf(con, "QMOUNT-FILESYSTEMS %s\n", strings.Join(fsNames, " "))
	fmt.Fprintf(con, "QMOUNT-LOAD-TIME %s\n", time.Since(start).Round(time.Millisecond))
	fmt.Fprintf(con, "QMOUNT-DONE\n")
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// Without a power-off method, a reset ends QEMU run with -no-reboot.
	unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	select {}
}

// modprobe loads name and its modules.dep dependencies.
func modprobe(name string) error {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return err
	}
	dir := filepath.Join("/lib/modules", unix.ByteSliceToString(uts.Release[:]))
	dep, err := os.ReadFile(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(dep), "\n") {
		mod, deps, ok := strings.Cut(line, ":")
		if !ok || strings.ReplaceAll(strings.TrimSuffix(path.Base(mod), ".ko"), "-", "_") != name {
			continue
		}
		list := strings.Fields(deps)
		for i := len(list) - 1; i >= 0; i-- {
			if err := insmod(filepath.Join(dir, list[i])); err != nil {
				return fmt.Errorf("%s: %w", list[i], err)
			}
		}
		return insmod(filepath.Join(dir, mod))
	}
	return fmt.Errorf("not in %s/modules.dep", dir)
}

func insmod(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && err != unix.EEXIST {
		return err
	}
	return nil
}
