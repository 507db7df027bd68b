//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// kind says how a method takes part in the comparison.
type kind int

const (
	kindKernel   kind = iota // the limit: the kernel's own driver, no VM
	kindQmount               // what is measured
	kindDataPath             // qmount's 9P + FUSE path alone
	kindPeer                 // other tools that do the same job
)

// method is one way to mount the image.
type method struct {
	key, name string
	kind      kind
	// skip, when set, says why the method is not measured on this host.
	skip string
	// note says what the method's figures mean, for the report.
	note  string
	mount func(ctx context.Context, e *env, img, mnt string) (*mounted, error)
	// setupPending, if set, reports a one-time setup the first mount
	// would do (and that mount latency must not include).
	pending func() bool
}

func (m *method) setupPending() bool { return m.pending != nil && m.pending() }

// env is what the methods share.
type env struct {
	qmount   string // the qmount binary
	stateDir string // XDG_STATE_HOME for qmount's supervisors
	guestTCG bool   // force libguestfs to TCG (as qmount picks it here)
	// tr samples the serving processes of the current run.
	tr *tracker
}

// mounted is a mount in place; unmount returns once the image is
// consistent (the tool's processes have exited and the loop device is
// free).
type mounted struct {
	root    string
	console string // qmount: the guest's console log
	accel   string // VM methods: the accelerator QEMU runs with
	unmount func(ctx context.Context) error
	// force tears down whatever is left after a failure, without grace.
	force func()
	// unmountTried: unmount was called (cleanup then forces).
	unmountTried bool
}

// methods lists every method with what this host lacks for it.
func methods(e *env) []*method {
	ms := []*method{
		{key: "kernel", name: "kernel (mount -o loop)", kind: kindKernel, mount: mountKernel,
			note: "the kernel's ext4 on a loop device; cold = host caches dropped before each phase (each phase reads data not read before in that mount)"},
		{key: "qmount", name: "qmount", kind: kindQmount, mount: qmountMount(""),
			note: "default guest; cold = a new VM each run, host caches dropped before each phase, and each phase reads data the guest has not read yet"},
		{key: "qmount-via-guest", name: "qmount --no-direct-read", kind: kindQmount, mount: qmountMount("", "--no-direct-read"),
			note: "default guest, every read through the VM (no direct reads from the image); as qmount"},
		{key: "qmount-mini", name: "qmount --guest mini", kind: kindQmount, mount: qmountMount("mini"),
			note: "the mini guest; as qmount"},
		{key: "loopback", name: "qmount loopback", kind: kindDataPath, mount: mountLoopback,
			note: "9P + FUSE over the kernel's mount of the image (no VM); mount latency includes the kernel mount"},
		{key: "guestmount", name: "guestmount", kind: kindPeer, mount: mountGuestmount, pending: guestfsApplianceMissing,
			note: "libguestfs (LIBGUESTFS_BACKEND=direct); cold as qmount"},
		{key: "fuse2fs", name: "fuse2fs", kind: kindPeer, mount: mountFuse2fs,
			note: "e2fsprogs' FUSE driver (no journal writes); cold = host caches dropped"},
	}
	qm := qmountAvailable(e.qmount, "mount")
	arch := runtime.GOARCH
	// Where qmount looks for built guests (see package guests).
	roots := filepath.SplitList(os.Getenv("QMOUNT_GUESTS"))
	roots = append(roots, filepath.Join(filepath.Dir(e.qmount), "guests"), filepath.Join(filepath.Dir(e.qmount), "..", "share", "qmount", "guests"))
	built := func(name string) bool {
		for _, r := range roots {
			if r != "" && exists(filepath.Join(r, name, arch, "manifest.json")) {
				return true
			}
		}
		return false
	}
	for _, m := range ms {
		switch m.key {
		case "kernel":
			m.skip = needTools("mount", "umount", "losetup")
		case "qmount", "qmount-via-guest":
			m.skip = qm
			if m.skip == "" && !built("linux") {
				m.skip = "default guest not built (make guests)"
			}
		case "qmount-mini":
			m.skip = qm
			if m.skip == "" && !built("mini") {
				m.skip = "mini guest not built (make guest GUEST=mini)"
			}
		case "loopback":
			m.skip = qmountAvailable(e.qmount, "loopback")
			if m.skip == "" {
				m.skip = needTools("fusermount3")
			}
		case "guestmount":
			m.skip = needTools("guestmount", "guestunmount")
			if m.skip == "" {
				if k, _ := filepath.Glob("/boot/vmlinuz-*"); len(k) == 0 {
					m.skip = "no /boot/vmlinuz-* for libguestfs' appliance (apt-get install linux-image-amd64)"
				}
			}
			if e.guestTCG {
				m.note = "libguestfs (LIBGUESTFS_BACKEND=direct, force_tcg as qmount uses TCG here); cold as qmount"
			}
		case "fuse2fs":
			m.skip = needTools("fuse2fs")
		}
	}
	return ms
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func needTools(tools ...string) string {
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			return t + " not installed (scripts/install-deps.sh bench installs it)"
		}
	}
	return ""
}

// qmountAvailable says why `qmount COMMAND` cannot be used, or "".
func qmountAvailable(bin, command string) string {
	if !exists(bin) {
		return bin + " not built (make build)"
	}
	out, err := exec.Command(bin, command, "--help").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte(command)) {
		return "this qmount has no working `" + command + "` command yet"
	}
	return ""
}

// start runs a command in its own process group, so that a terminal's ^C
// reaches the benchmark (which then unmounts) and not the servers.
func start(name string, args []string, extraEnv ...string) (*exec.Cmd, error) {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Env = append(os.Environ(), extraEnv...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	return cmd, nil
}

// runCmd runs a command to completion (own process group) and returns
// its error with its output.
func runCmd(ctx context.Context, name string, args []string, extraEnv ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Env = append(os.Environ(), extraEnv...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, tail(strings.TrimSpace(string(out)), 6))
	}
	return nil
}

// dumpDir is where a hung child's stderr is kept (the -out directory).
var dumpDir string

// waitChild waits for a child with a deadline, killing it past it; it
// reports the child's exact CPU time to tr.
func waitChild(cmd *exec.Cmd, limit time.Duration, tr *tracker) error {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(limit):
		// A Go server prints its goroutines on SIGQUIT: keep them to
		// show where it hangs.
		cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		err = fmt.Errorf("%s did not exit within %v after unmount", filepath.Base(cmd.Path), limit)
		if dumpDir != "" {
			p := filepath.Join(dumpDir, fmt.Sprintf("hang-%s-%d.txt", filepath.Base(cmd.Path), cmd.Process.Pid))
			if os.WriteFile(p, []byte(fmt.Sprint(cmd.Stderr)), 0o644) == nil {
				err = fmt.Errorf("%w (its stderr, with a SIGQUIT dump: %s)", err, p)
			}
		}
	}
	if tr != nil && cmd.ProcessState != nil {
		tr.exited(cmd.Process.Pid, cmd.ProcessState.UserTime()+cmd.ProcessState.SystemTime())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return fmt.Errorf("%s: %w: %s", filepath.Base(cmd.Path), err, tail(fmt.Sprint(cmd.Stderr), 6))
	}
	return err
}

// loopsOf lists the loop devices backed by img.
func loopsOf(img string) []string {
	out, _ := exec.Command("losetup", "-j", img, "-O", "NAME", "-n").Output()
	return strings.Fields(string(out))
}

// unmountKernel unmounts a kernel loop mount and waits until the loop
// device is released (autoclear detaches it asynchronously).
func unmountKernel(ctx context.Context, img, mnt string) error {
	if err := runCmd(ctx, "umount", []string{mnt}); err != nil {
		return err
	}
	for deadline := time.Now().Add(30 * time.Second); len(loopsOf(img)) > 0; {
		if time.Now().After(deadline) {
			return fmt.Errorf("loop device of %s still attached", img)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// forceKernel lazily unmounts and detaches img's loop devices.
func forceKernel(img string, mnts ...string) {
	for _, m := range mnts {
		exec.Command("umount", "-l", m).Run()
	}
	for _, l := range loopsOf(img) {
		exec.Command("losetup", "-d", l).Run()
	}
}

func mountKernel(ctx context.Context, e *env, img, mnt string) (*mounted, error) {
	if err := runCmd(ctx, "mount", []string{"-o", "loop", img, mnt}); err != nil {
		return nil, err
	}
	return &mounted{
		root:    mnt,
		unmount: func(ctx context.Context) error { return unmountKernel(ctx, img, mnt) },
		force:   func() { forceKernel(img, mnt) },
	}, nil
}

func mountFuse2fs(ctx context.Context, e *env, img, mnt string) (*mounted, error) {
	cmd, err := start("fuse2fs", []string{img, mnt, "-f"})
	if err != nil {
		return nil, err
	}
	pid := cmd.Process.Pid
	e.tr.add(true, pid)
	m := &mounted{root: mnt}
	m.unmount = func(ctx context.Context) error {
		uerr := runCmd(ctx, "umount", []string{mnt})
		return errors.Join(uerr, waitChild(cmd, 2*time.Minute, e.tr))
	}
	m.force = func() {
		exec.Command("umount", "-l", mnt).Run()
		killAll([]int{pid})
	}
	return m, nil
}

func mountLoopback(ctx context.Context, e *env, img, mnt string) (*mounted, error) {
	kdir := mnt + ".kernel"
	if err := os.MkdirAll(kdir, 0o755); err != nil {
		return nil, err
	}
	if err := runCmd(ctx, "mount", []string{"-o", "loop", img, kdir}); err != nil {
		return nil, err
	}
	cmd, err := start(e.qmount, []string{"loopback", kdir, mnt})
	if err != nil {
		forceKernel(img, kdir)
		return nil, err
	}
	pid := cmd.Process.Pid
	e.tr.add(true, pid)
	m := &mounted{root: mnt}
	m.unmount = func(ctx context.Context) error {
		uerr := runCmd(ctx, "fusermount3", []string{"-u", mnt})
		werr := waitChild(cmd, 20*time.Second, e.tr)
		return errors.Join(uerr, werr, unmountKernel(ctx, img, kdir))
	}
	m.force = func() {
		exec.Command("fusermount3", "-u", "-z", mnt).Run()
		killAll([]int{pid})
		forceKernel(img, kdir)
	}
	return m, nil
}

// guestfsEnv is libguestfs' environment: the direct backend (QEMU run by
// libguestfs itself), TCG when qmount runs on TCG here.
func guestfsEnv(e *env) []string {
	v := []string{"LIBGUESTFS_BACKEND=direct"}
	if e.guestTCG {
		v = append(v, "LIBGUESTFS_BACKEND_SETTINGS=force_tcg")
	}
	return v
}

func mountGuestmount(ctx context.Context, e *env, img, mnt string) (*mounted, error) {
	pidFile := mnt + ".pid"
	os.Remove(pidFile)
	err := runCmd(ctx, "guestmount", []string{"--format=raw", "-a", img, "-m", "/dev/sda", "--pid-file", pidFile, mnt}, guestfsEnv(e)...)
	pids := procsMatching(img) // guestmount and its QEMU both name the image
	if err != nil {
		exec.Command("guestunmount", mnt).Run()
		killAll(pids)
		return nil, err
	}
	m := &mounted{root: mnt}
	for _, p := range pids {
		isVM := strings.Contains(filepath.Base(firstArg(p)), "qemu")
		e.tr.add(isVM, p)
		if isVM {
			m.accel = accelOf(p)
		}
	}
	m.unmount = func(ctx context.Context) error {
		if err := runCmd(ctx, "guestunmount", []string{mnt}); err != nil {
			return err
		}
		return waitExit(ctx, pids, 2*time.Minute)
	}
	m.force = func() {
		exec.Command("guestunmount", "--no-retry", mnt).Run()
		exec.Command("umount", "-l", mnt).Run()
		killAll(append(pids, procsMatching(img)...))
	}
	return m, nil
}

// guestfsApplianceMissing reports whether libguestfs has yet to build its
// appliance (supermin caches it in $LIBGUESTFS_CACHEDIR, $TMPDIR or
// /var/tmp, under .guestfs-UID/appliance.d).
func guestfsApplianceMissing() bool {
	dir := os.Getenv("LIBGUESTFS_CACHEDIR")
	if dir == "" {
		dir = os.Getenv("TMPDIR")
	}
	if dir == "" {
		dir = "/var/tmp"
	}
	return !exists(filepath.Join(dir, fmt.Sprintf(".guestfs-%d", os.Getuid()), "appliance.d", "kernel"))
}

func firstArg(pid int) string {
	if a := cmdline(pid); len(a) > 0 {
		return a[0]
	}
	return ""
}

// accelOf reads the accelerator from a QEMU command line.
func accelOf(pid int) string {
	args := cmdline(pid)
	for i, a := range args {
		var v string
		switch {
		case a == "-accel" && i+1 < len(args):
			v = args[i+1]
		case (a == "-machine" || a == "-M") && i+1 < len(args) && strings.Contains(args[i+1], "accel="):
			_, v, _ = strings.Cut(args[i+1], "accel=")
		case a == "-enable-kvm":
			return "kvm"
		default:
			continue
		}
		v, _, _ = strings.Cut(v, ",")
		return v
	}
	if len(args) > 0 && strings.Contains(args[0], "qemu") {
		return "tcg" // QEMU's default without -accel
	}
	return ""
}

// qmountState is the part of `qmount status --json` the benchmark reads.
type qmountState struct {
	Mountpoint    string `json:"mountpoint"`
	SupervisorPID int    `json:"supervisor_pid"`
	VMPID         int    `json:"vm_pid"`
	Console       string `json:"console"`
	Log           string `json:"log"`
}

func (e *env) qmountEnv() []string { return []string{"XDG_STATE_HOME=" + e.stateDir} }

func qmountStatus(ctx context.Context, e *env, mnt string) (*qmountState, error) {
	cmd := exec.CommandContext(ctx, e.qmount, "status", "--json")
	cmd.Env = append(os.Environ(), e.qmountEnv()...)
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("qmount status --json: %w", err)
	}
	var list []qmountState
	if err := json.Unmarshal(out, &list); err != nil {
		var one qmountState
		if err1 := json.Unmarshal(out, &one); err1 != nil {
			return nil, fmt.Errorf("parsing qmount status --json: %w", err)
		}
		list = []qmountState{one}
	}
	for i := range list {
		if list[i].Mountpoint == mnt {
			return &list[i], nil
		}
	}
	return nil, fmt.Errorf("qmount status does not list %s", mnt)
}

func qmountMount(guest string, flags ...string) func(ctx context.Context, e *env, img, mnt string) (*mounted, error) {
	return func(ctx context.Context, e *env, img, mnt string) (*mounted, error) {
		args := append([]string{"mount"}, flags...)
		if guest != "" {
			args = append(args, "--guest", guest)
		}
		args = append(args, img, mnt)
		err := runCmd(ctx, e.qmount, args, e.qmountEnv()...)
		st, serr := qmountStatus(ctx, e, mnt)
		var pids []int
		if st != nil {
			for _, p := range []int{st.SupervisorPID, st.VMPID} {
				if p > 0 {
					pids = append(pids, p)
				}
			}
		}
		force := func() {
			c := exec.Command(e.qmount, "stop", mnt)
			c.Env = append(os.Environ(), e.qmountEnv()...)
			c.Run()
			exec.Command("umount", "-l", mnt).Run()
			killAll(append(pids, procsMatching(img)...))
		}
		if err != nil {
			force()
			return nil, err
		}
		if serr != nil {
			force()
			return nil, serr
		}
		m := &mounted{root: mnt, console: st.Console, force: force}
		if st.SupervisorPID > 0 {
			e.tr.add(false, st.SupervisorPID)
		}
		if st.VMPID > 0 {
			e.tr.add(true, st.VMPID)
			m.accel = accelOf(st.VMPID)
		}
		m.unmount = func(ctx context.Context) error {
			if err := runCmd(ctx, e.qmount, []string{"unmount", mnt}, e.qmountEnv()...); err != nil {
				return err
			}
			return waitExit(ctx, pids, 2*time.Minute)
		}
		return m, nil
	}
}

// waitReady polls until mnt is a mount point whose root lists the image's
// marker file (the first successful readdir of the root).
func waitReady(ctx context.Context, mnt string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		if isMountPoint(mnt) {
			if ents, err := os.ReadDir(mnt); err == nil {
				for _, d := range ents {
					if d.Name() == marker {
						return nil
					}
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready (no %s in its root) within %v", mnt, marker, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// isMountPoint reads /proc/self/mountinfo.
func isMountPoint(p string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && unescapeOctal(f[4]) == p {
			return true
		}
	}
	return false
}

func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
