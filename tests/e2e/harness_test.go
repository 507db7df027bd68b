//go:build linux

// Package e2e boots real guests (QEMU, the built Debian kernel and
// initramfs) on real images made with mkfs, mounts them through the 9P
// client and FUSE, and checks what ends up in the images.
//
// The guests come from build/guests (make guests-all). Without them the
// tests skip with a message; `make test` builds them first, so nothing
// skips in CI.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/qmount/qmount/guests"
	"github.com/qmount/qmount/internal/wire"
	"github.com/qmount/qmount/session"
	"github.com/qmount/qmount/vmm"
	_ "github.com/qmount/qmount/vmm/qemu"
)

// repoRoot is the module root (tests run in tests/e2e).
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func findGuest(t testing.TB, arch string) *guests.Built {
	t.Helper()
	t.Setenv(guests.EnvDirs, filepath.Join(repoRoot(t), "build", "guests"))
	g, err := guests.Find(guests.Default, arch)
	if err != nil {
		t.Skipf("no built guest (run `make guests-all`; make test does): %v", err)
	}
	return g
}

func requireTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (scripts/install-deps.sh installs it)", tool)
		}
	}
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// bootOpts tune one boot.
type bootOpts struct {
	arch     string
	fstype   string
	options  string
	readOnly bool
	disks    []string
	stateDir string // default: a new temporary directory
}

// booted is a running guest with its filesystem mounted at mnt via FUSE.
type booted struct {
	s        *session.Session
	mnt      string
	state    string
	console  string
	unmount  func() error
	bootTime time.Duration
}

// boot starts a guest for img and mounts it at a new directory.
func boot(t *testing.T, img string, o bootOpts) *booted {
	t.Helper()
	b, err := tryBoot(t, img, o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func tryBoot(t *testing.T, img string, o bootOpts) (*booted, error) {
	t.Helper()
	g := findGuest(t, o.arch)
	drv, err := vmm.Get("qemu")
	if err != nil {
		t.Fatal(err)
	}
	state := o.stateDir
	if state == "" {
		state = t.TempDir()
	}
	console := filepath.Join(state, "console.log")
	disks := o.disks
	if len(disks) == 0 {
		disks = []string{img}
	}
	cfg := session.Config{
		Driver: drv,
		Machine: vmm.Config{
			Kernel:     g.Kernel,
			Initrd:     g.Initrd,
			Arch:       g.Arch,
			MemoryMiB:  256,
			CPUs:       1,
			ConsoleLog: console,
			StateDir:   state,
		},
		Mount:  wire.MountRequest{FSType: o.fstype, Options: o.options, ReadOnly: o.readOnly},
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
	if g.Arch == "arm64" {
		cfg.Machine.MemoryMiB = 512
	}
	for i, d := range disks {
		serial := wire.DiskSerial(i)
		cfg.Machine.Disks = append(cfg.Machine.Disks, vmm.Disk{Path: d, ReadOnly: o.readOnly, Serial: serial})
		cfg.Mount.Disks = append(cfg.Mount.Disks, serial)
	}
	return startMounted(t, cfg, state, console)
}

// startMounted boots a guest for cfg and mounts its filesystem with FUSE
// at a new directory; the guest is shut down when the test ends.
func startMounted(t *testing.T, cfg session.Config, state, console string) (*booted, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	s, err := session.Start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	b := &booted{s: s, state: state, console: console, bootTime: time.Since(start)}
	t.Cleanup(func() {
		if b.unmount != nil {
			b.unmount()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	b.mnt = filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(b.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	conn, err := s.DialNineP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b.unmount, err = mountFUSE(ctx, t, conn, b.mnt, cfg.Mount.ReadOnly); err != nil {
		t.Fatalf("mounting the 9p client: %v", err)
	}
	return b, nil
}

// stop unmounts the FUSE mount and shuts the guest down cleanly, checking
// that the VM exited.
func (b *booted) stop(t *testing.T) {
	t.Helper()
	if b.unmount != nil {
		if err := b.unmount(); err != nil {
			t.Errorf("unmounting fuse: %v", err)
		}
		b.unmount = nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := b.s.Shutdown(ctx); err != nil {
		t.Fatalf("guest shutdown: %v\n%s", err, tail(b.console))
	}
	if pid := b.s.Machine().PID(); pid > 0 && processAlive(pid) {
		t.Fatalf("qemu pid %d still running after shutdown", pid)
	}
}

func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie is dead for our purposes.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return "console:\n" + strings.Join(lines, "\n")
}

// timeline parses the guest's "qmount-init: timeline" console line.
var timelineRE = regexp.MustCompile(`qmount-init: timeline (.*) \(ms\)`)
var first9PRE = regexp.MustCompile(`first 9P byte at (\d+) ms`)

func timeline(console string) (map[string]int, bool) {
	b, err := os.ReadFile(console)
	if err != nil {
		return nil, false
	}
	m := timelineRE.FindSubmatch(b)
	if m == nil {
		return nil, false
	}
	out := map[string]int{}
	for _, kv := range strings.Fields(string(m[1])) {
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.Atoi(v)
		if err == nil {
			out[k] = n
		}
	}
	if f := first9PRE.FindSubmatch(b); f != nil {
		n, _ := strconv.Atoi(string(f[1]))
		out["first9p"] = n
	}
	return out, true
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// tree is the expected content of a filesystem: path -> file content, and
// directories as path -> nil.
type tree map[string][]byte

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func seedTree(t testing.TB) tree {
	return tree{
		"hello.txt":       []byte("hello from the seed\n"),
		"sub":             nil,
		"sub/nested.bin":  randomBytes(t, 200<<10),
		"sub/empty":       {},
		"sub/deeper":      nil,
		"sub/deeper/note": []byte("deep\n"),
	}
}

func writeTree(t testing.TB, root string, tr tree) {
	t.Helper()
	paths := make([]string, 0, len(tr))
	for p := range tr {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		full := filepath.Join(root, p)
		if tr[p] == nil {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, tr[p], 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// readTree reads every file and directory below root, skipping names in skip
// (filesystem-internal entries such as "lost+found").
func readTree(t testing.TB, root string, skip map[string]bool) tree {
	t.Helper()
	tr := tree{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		if skip[rel] {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			tr[rel] = nil
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if b == nil {
			b = []byte{}
		}
		tr[rel] = b
		return nil
	})
	if err != nil {
		t.Fatalf("reading tree %s: %v", root, err)
	}
	return tr
}

func diffTrees(want, got tree) []string {
	var diffs []string
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			diffs = append(diffs, "missing "+p)
		case (w == nil) != (g == nil):
			diffs = append(diffs, "type differs: "+p)
		case !bytes.Equal(w, g):
			diffs = append(diffs, fmt.Sprintf("content differs: %s (%d vs %d bytes)", p, len(w), len(g)))
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			diffs = append(diffs, "unexpected "+p)
		}
	}
	sort.Strings(diffs)
	return diffs
}

func hostArch() string { return runtime.GOARCH }
