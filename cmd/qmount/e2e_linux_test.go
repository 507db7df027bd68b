package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The tests run the real qmount binary, built once by TestMain.
var qmountBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "qmount-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	qmountBin = filepath.Join(dir, "qmount")
	out, err := exec.Command("go", "build", "-o", qmountBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building qmount: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is one test's isolated qmount environment.
type env struct {
	t        *testing.T
	stateDir string
	mountDir string // QMOUNT_MOUNT_DIR
	work     string // images, mount points
}

func newEnv(t *testing.T) *env {
	t.Helper()
	// Short paths: the control socket's path must fit in sun_path.
	base, err := os.MkdirTemp("", "qm")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, stateDir: filepath.Join(base, "s"), mountDir: filepath.Join(base, "m"), work: filepath.Join(base, "w")}
	for _, d := range []string{e.work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { e.cleanup(); os.RemoveAll(base) })
	return e
}

// cleanup never leaves a supervisor, VM or FUSE mount behind.
func (e *env) cleanup() {
	ents, _ := os.ReadDir(filepath.Join(e.stateDir, "mounts"))
	for _, ent := range ents {
		b, err := os.ReadFile(filepath.Join(e.stateDir, "mounts", ent.Name(), "state.json"))
		if err != nil {
			continue
		}
		var st struct {
			SupervisorPID int    `json:"supervisor_pid"`
			Mountpoint    string `json:"mountpoint"`
		}
		json.Unmarshal(b, &st)
		if st.SupervisorPID > 0 {
			syscall.Kill(st.SupervisorPID, syscall.SIGKILL)
		}
		if st.Mountpoint != "" {
			syscall.Unmount(st.Mountpoint, syscall.MNT_DETACH)
		}
	}
	for _, pid := range e.vmPIDs() {
		e.t.Errorf("cleanup: killing leftover VM %d", pid)
		syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, mp := range mountsUnder(filepath.Dir(e.stateDir)) {
		e.t.Errorf("cleanup: detaching leftover mount %s", mp)
		syscall.Unmount(mp, syscall.MNT_DETACH)
	}
}

// vmPIDs lists running processes whose command line names this env's
// state directory (our QEMUs).
func (e *env) vmPIDs() []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err != nil || !bytes.Contains(b, []byte(e.stateDir+"/")) {
			continue
		}
		if st, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "stat")); err == nil {
			if i := bytes.LastIndexByte(st, ')'); i > 0 && i+2 < len(st) && st[i+2] == 'Z' {
				continue
			}
		}
		if strings.Contains(string(b), "qemu") {
			out = append(out, pid)
		}
	}
	return out
}

// mountsUnder lists mount points below dir.
func mountsUnder(dir string) []string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			out = append(out, f[4])
		}
	}
	return out
}

func (e *env) environ() []string {
	return append(os.Environ(),
		"QMOUNT_STATE_DIR="+e.stateDir,
		"QMOUNT_MOUNT_DIR="+e.mountDir,
		"QMOUNT_GUESTS="+guestsDir(),
	)
}

func guestsDir() string {
	abs, _ := filepath.Abs("../../build/guests")
	return abs
}

type result struct {
	code           int
	stdout, stderr string
}

// run runs qmount and waits for it.
func (e *env) run(args ...string) result {
	e.t.Helper()
	cmd := exec.Command(qmountBin, args...)
	cmd.Env = e.environ()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("running qmount %v: %v", args, err)
	}
	return result{code, out.String(), errb.String()}
}

// mustRun runs qmount and fails the test unless it exits 0.
func (e *env) mustRun(args ...string) result {
	e.t.Helper()
	r := e.run(args...)
	if r.code != 0 {
		e.t.Fatalf("qmount %s: exit %d\nstdout: %s\nstderr: %s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr, e.lastLog())
	}
	return r
}

// lastLog returns the newest mount's logs, to explain a failure.
func (e *env) lastLog() string {
	cmd := exec.Command(qmountBin, "log")
	cmd.Env = e.environ()
	out, _ := cmd.CombinedOutput()
	return "\nqmount log:\n" + string(out)
}

// statusEntry is `qmount status --json`'s element.
type statusEntry struct {
	ID                string    `json:"id"`
	Mountpoint        string    `json:"mountpoint"`
	Disks             []string  `json:"disks"`
	FSType            string    `json:"fstype"`
	Guest             string    `json:"guest"`
	ReadOnly          bool      `json:"read_only"`
	SupervisorPID     int       `json:"supervisor_pid"`
	VMPID             int       `json:"vm_pid"`
	State             string    `json:"state"`
	Since             time.Time `json:"since"`
	CreatedMountpoint bool      `json:"created_mountpoint"`
}

func (e *env) status() []statusEntry {
	e.t.Helper()
	r := e.mustRun("status", "--json")
	var out []statusEntry
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		e.t.Fatalf("status --json: %v\n%s", err, r.stdout)
	}
	return out
}

func (e *env) statusOf(mp string) statusEntry {
	e.t.Helper()
	for _, s := range e.status() {
		if s.Mountpoint == mp {
			return s
		}
	}
	e.t.Fatalf("%s not in qmount status", mp)
	return statusEntry{}
}

// assertNothingLeft checks that no mount, state, socket, VM or FUSE mount
// of this env remains.
func (e *env) assertNothingLeft() {
	e.t.Helper()
	ents, _ := os.ReadDir(filepath.Join(e.stateDir, "mounts"))
	if len(ents) != 0 {
		e.t.Errorf("state left behind: %v", ents)
	}
	if ents, _ := os.ReadDir(filepath.Join(e.stateDir, "locks")); len(ents) != 0 {
		e.t.Errorf("lock files left behind: %v", ents)
	}
	if pids := e.vmPIDs(); len(pids) != 0 {
		e.t.Errorf("VMs left running: %v", pids)
	}
	if ms := mountsUnder(filepath.Dir(e.stateDir)); len(ms) != 0 {
		e.t.Errorf("mounts left: %v", ms)
	}
	if ents, err := os.ReadDir(e.mountDir); err == nil && len(ents) != 0 {
		e.t.Errorf("mount points left in %s: %v", e.mountDir, ents)
	}
}

// waitGone waits up to 10 s for pid to exit.
func waitGone(t *testing.T, what string, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("%s (pid %d) still running after 10 s", what, pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func alive(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(st, ')')
	return !(i > 0 && i+2 < len(st) && st[i+2] == 'Z')
}

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install %s)", tool, aptOf(tool))
		}
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse: FUSE is not available")
	}
}

func aptOf(tool string) string {
	switch tool {
	case "mkfs.ext4", "e2fsck", "debugfs":
		return "e2fsprogs"
	case "fusermount3":
		return "fuse3"
	case "qemu-system-x86_64":
		return "qemu-system-x86"
	}
	return tool
}

// needVM skips unless a guest can be booted.
func needVM(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots VMs; skipped with -short")
	}
	need(t, "qemu-system-x86_64", "mkfs.ext4", "e2fsck", "debugfs", "fusermount3")
	if _, err := os.Stat(filepath.Join(guestsDir(), "linux", "amd64", "manifest.json")); err != nil {
		t.Skipf("guest not built in %s: run make guests", guestsDir())
	}
}

// mkfs makes an ext4 image of size MiB with label.
func (e *env) mkfs(name, label string, sizeMiB int) string {
	e.t.Helper()
	img := filepath.Join(e.work, name)
	f, err := os.Create(img)
	if err != nil {
		e.t.Fatal(err)
	}
	f.Truncate(int64(sizeMiB) << 20)
	f.Close()
	args := []string{"-q", "-F"}
	if label != "" {
		args = append(args, "-L", label)
	}
	if out, err := exec.Command("mkfs.ext4", append(args, img)...).CombinedOutput(); err != nil {
		e.t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	return img
}

// fsck checks img is clean (read-only check).
func fsck(t *testing.T, img string) {
	t.Helper()
	out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput()
	if err != nil {
		t.Errorf("e2fsck -fn %s: %v\n%s", img, err, out)
	}
}

// catImage reads a file from an ext4 image with debugfs.
func catImage(t *testing.T, img, path string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "cat "+path, img).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", path, err)
	}
	return string(out)
}

// oneErrorLine checks the qmount-prefixed error lines of stderr: exactly
// one, containing want.
func oneErrorLine(t *testing.T, r result, want string) {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(r.stderr, "\n"), "\n") {
		if strings.HasPrefix(l, "qmount: ") {
			lines = append(lines, l)
		}
	}
	if r.code != 1 || len(lines) != 1 || !strings.Contains(lines[0], want) {
		t.Errorf("exit %d, error lines %q; want exit 1 and one line containing %q\nstderr: %s", r.code, lines, want, r.stderr)
	}
	if strings.Contains(r.stderr, "goroutine ") || strings.Contains(r.stderr, "panic") {
		t.Errorf("stderr shows a crash: %s", r.stderr)
	}
}
