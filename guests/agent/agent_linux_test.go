package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"

	"github.com/qmount/qmount/internal/wire"
)

// These tests run the agent's serve loop on the host: the control protocol
// over a socketpair, a real ext4 image made by mkfs.ext4 on a loop device
// mounted by the host kernel, p9server over a unix socket and the p9
// client. Everything but PID-1 duties, module loading and power-off.

func requireHostMount(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts loop devices")
	}
	for _, tool := range append([]string{"losetup", "blockdev", "mkfs.ext4", "e2fsck", "debugfs"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install e2fsprogs util-linux)", tool)
		}
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skip("loop devices unavailable: no /dev/loop-control")
	}
}

// makeExt4 makes an ext4 image holding files.
func makeExt4(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	writeTree(t, src, files)
	img := filepath.Join(dir, "ext4.img")
	run(t, "truncate", "-s", "32M", img)
	run(t, "mkfs.ext4", "-q", "-F", "-d", src, img)
	return img
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// attachLoop attaches img to a free loop device until the test ends.
func attachLoop(t *testing.T, img string) string {
	t.Helper()
	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	if err != nil {
		t.Skipf("loop devices unavailable: losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { detachLoop(t, dev) })
	// A read-only mount sets the device read-only (BLKROSET), which a
	// loop device keeps after it is detached: start writable.
	run(t, "blockdev", "--setrw", dev)
	return dev
}

// detachLoop makes dev writable again (see attachLoop) and detaches it.
func detachLoop(t *testing.T, dev string) {
	exec.Command("blockdev", "--setrw", dev).Run()
	if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil && !bytes.Contains(out, []byte("No such device")) {
		t.Logf("losetup -d %s: %v: %s", dev, err, out)
	}
}

// mapDisks resolves serials to fixed devices (the host has no virtio
// serials); partitions are not used by these tests.
type mapDisks map[string]string

func (m mapDisks) Find(_ context.Context, serial string, partition int) (string, error) {
	dev, ok := m[serial]
	if !ok {
		return "", fmt.Errorf("no disk with serial %s", serial)
	}
	if partition != 0 {
		return "", errors.New("partitions not supported here")
	}
	return dev, nil
}

// isMounted reports whether dir is a mount point of this namespace.
func isMounted(t *testing.T, dir string) bool {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if fields := strings.Fields(s.Text()); len(fields) > 4 && fields[4] == dir {
			return true
		}
	}
	return false
}

// testAgent is an agent under test and the host's ends of its streams.
type testAgent struct {
	a        *Agent
	mountDir string
	ninePath string
	host     net.Conn
	dec      *wire.Decoder
	enc      *wire.Encoder
	logs     []string
	done     chan struct{}
	end      Ending
	err      error
	console  *syncBuffer
}

type syncBuffer struct {
	mu chan struct{}
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu <- struct{}{}
	defer func() { <-s.mu }()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu <- struct{}{}
	defer func() { <-s.mu }()
	return s.b.String()
}

// startAgent runs an agent serving disks, with a socketpair as control
// connection and a unix socket as 9P listener.
func startAgent(t *testing.T, ctx context.Context, disks mapDisks) *testAgent {
	t.Helper()
	dir := t.TempDir()
	ta := &testAgent{
		mountDir: filepath.Join(dir, "mnt"),
		ninePath: filepath.Join(dir, "9p.sock"),
		done:     make(chan struct{}),
		console:  &syncBuffer{mu: make(chan struct{}, 1)},
	}
	// Never leave a mount behind in a temp dir that is about to be removed.
	t.Cleanup(func() {
		if isMounted(t, ta.mountDir) {
			t.Errorf("%s still mounted at the end; detaching", ta.mountDir)
			unix.Unmount(ta.mountDir, unix.MNT_DETACH)
		}
	})
	l, err := net.Listen("unix", ta.ninePath)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(NewConsoleHandler(ta.console, slog.LevelDebug))
	a, err := New(Config{MountDir: ta.mountDir, Disks: disks, NineP: l}, WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	ta.a = a
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	guest := fileConn(t, fds[0])
	ta.host = fileConn(t, fds[1])
	ta.dec = wire.NewDecoder(ta.host)
	ta.enc = wire.NewEncoder(ta.host)
	go func() {
		defer close(ta.done)
		ta.end, ta.err = a.Serve(ctx, guest)
	}()
	t.Cleanup(func() {
		ta.host.Close() // ends a session the test left open
		select {
		case <-ta.done:
		case <-time.After(30 * time.Second):
			t.Error("agent did not end")
		}
		if t.Failed() {
			t.Logf("console:\n%s", ta.console.String())
		}
	})
	return ta
}

func fileConn(t *testing.T, fd int) net.Conn {
	t.Helper()
	f := os.NewFile(uintptr(fd), "socketpair")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// next returns the next message that is not a log line (logs are kept).
func (ta *testAgent) next(t *testing.T) *wire.Message {
	t.Helper()
	ta.host.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		m, err := ta.dec.Decode()
		if err != nil {
			t.Fatalf("reading from the agent: %v\nconsole:\n%s", err, ta.console.String())
		}
		if m.Type == wire.TypeLog {
			ta.logs = append(ta.logs, m.Level+" "+m.Msg)
			continue
		}
		return m
	}
}

func (ta *testAgent) send(t *testing.T, m *wire.Message) {
	t.Helper()
	if err := ta.enc.Encode(m); err != nil {
		t.Fatal(err)
	}
}

func (ta *testAgent) expect(t *testing.T, typ string) *wire.Message {
	t.Helper()
	m := ta.next(t)
	if m.Type != typ {
		t.Fatalf("got %+v, want a %s message", m, typ)
	}
	return m
}

// wait waits for Serve to return.
func (ta *testAgent) wait(t *testing.T) (Ending, error) {
	t.Helper()
	select {
	case <-ta.done:
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return")
	}
	return ta.end, ta.err
}

// dial9P connects a p9 client to the agent's 9P listener.
func (ta *testAgent) dial9P(t *testing.T) (*p9.Client, p9.File) {
	t.Helper()
	conn, err := net.Dial("unix", ta.ninePath)
	if err != nil {
		t.Fatal(err)
	}
	c, err := p9.NewClient(conn)
	if err != nil {
		t.Fatal(err)
	}
	root, err := c.Attach("")
	if err != nil {
		t.Fatal(err)
	}
	return c, root
}

func readFile9P(t *testing.T, root p9.File, name string) string {
	t.Helper()
	_, f, err := root.Walk([]string{name})
	if err != nil {
		t.Fatalf("walk %s: %v", name, err)
	}
	defer f.Close()
	if _, _, err := f.Open(p9.ReadOnly); err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	b := make([]byte, 1<<16)
	n, err := f.ReadAt(b, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("read %s: %v", name, err)
	}
	return string(b[:n])
}

// create9P creates name with content and fsyncs it.
func create9P(root p9.File, name, content string) error {
	_, dir, err := root.Walk(nil)
	if err != nil {
		return err
	}
	f, _, _, err := dir.Create(name, p9.ReadWrite, 0o644, p9.NoUID, p9.NoGID)
	if err != nil {
		dir.Close()
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte(content), 0); err != nil {
		return err
	}
	return f.FSync()
}

// checkImage runs e2fsck -fn on img and returns the content of files in it.
func checkImage(t *testing.T, img string, files ...string) map[string]string {
	t.Helper()
	if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, f := range files {
		out, err := exec.Command("debugfs", "-R", "cat /"+f, img).Output()
		if err != nil {
			t.Errorf("debugfs cat %s: %v", f, err)
		}
		got[f] = string(out)
	}
	return got
}

func TestAgentServesExt4(t *testing.T) {
	requireHostMount(t)
	img := makeExt4(t, map[string]string{"hello.txt": "hello from ext4\n", "dir/inner.txt": "inner\n"})
	dev := attachLoop(t, img)
	ta := startAgent(t, context.Background(), mapDisks{"qmount0": dev})

	hello := ta.expect(t, wire.TypeHello)
	if hello.Version != wire.Version || hello.Arch == "" || hello.Kernel == "" {
		t.Errorf("hello %+v", hello)
	}
	// A bad line is answered with an error and the session goes on.
	fmt.Fprintf(ta.host, "{\"type\":\"frobnicate\"}\n")
	if m := ta.expect(t, wire.TypeError); m.Step != "control" {
		t.Errorf("bad line: %+v", m)
	}

	ta.send(t, &wire.Message{Type: wire.TypeMount, Mount: &wire.MountRequest{Disks: []string{"qmount0"}, FSType: "ext4", Options: "noatime"}})
	m := ta.expect(t, wire.TypeMounted)
	if m.FSType != "ext4" || m.ReadOnly {
		t.Errorf("mounted %+v", m)
	}
	tl := m.Timeline
	if tl == nil || tl.Init <= 0 || tl.Connected < tl.Init || tl.Mounted < tl.Connected || tl.Serving < tl.Mounted {
		t.Errorf("timeline %+v", tl)
	}
	if !isMounted(t, ta.mountDir) {
		t.Fatal("not mounted")
	}
	// A second mount request is refused.
	ta.send(t, &wire.Message{Type: wire.TypeMount, Mount: &wire.MountRequest{Disks: []string{"qmount0"}, FSType: "ext4"}})
	if m := ta.expect(t, wire.TypeError); m.Step != "mount" || !strings.Contains(m.Error, "already mounted") {
		t.Errorf("second mount: %+v", m)
	}

	c, root := ta.dial9P(t)
	if got := readFile9P(t, root, "hello.txt"); got != "hello from ext4\n" {
		t.Errorf("hello.txt = %q", got)
	}
	_, d, err := root.Walk([]string{"dir"})
	if err != nil {
		t.Fatal(err)
	}
	if got := readFile9P(t, d, "inner.txt"); got != "inner\n" {
		t.Errorf("dir/inner.txt = %q", got)
	}
	d.Close()
	if err := create9P(root, "new.txt", "written over 9P\n"); err != nil {
		t.Fatalf("create over 9P: %v", err)
	}
	root.Close()
	c.Close()

	ta.send(t, &wire.Message{Type: wire.TypeShutdown})
	ta.expect(t, wire.TypeBye)
	if end, err := ta.wait(t); end != EndShutdown || err != nil {
		t.Errorf("Serve = %v, %v", end, err)
	}
	if isMounted(t, ta.mountDir) {
		t.Error("still mounted after bye")
	}
	// After bye the agent closes the control connection.
	if _, err := ta.dec.Decode(); !errors.Is(err, io.EOF) {
		t.Errorf("after bye: %v, want EOF", err)
	}

	// Log lines reached the host and the console, timeline included.
	logs := strings.Join(ta.logs, "\n")
	for _, want := range []string{"info mounted dev=" + dev, "info timeline init=", "info first 9P byte at "} {
		if !strings.Contains(logs, want) {
			t.Errorf("forwarded logs lack %q:\n%s", want, logs)
		}
	}
	console := ta.console.String()
	for _, want := range []string{"qmount-init: " + FormatTimeline(*tl), "qmount-init: unmounted dir="} {
		if !strings.Contains(console, want) {
			t.Errorf("console lacks %q:\n%s", want, console)
		}
	}

	detachLoop(t, dev)
	got := checkImage(t, img, "new.txt", "hello.txt")
	if got["new.txt"] != "written over 9P\n" || got["hello.txt"] != "hello from ext4\n" {
		t.Errorf("image holds %q", got)
	}
}

func TestAgentReadOnlyDetected(t *testing.T) {
	requireHostMount(t)
	img := makeExt4(t, map[string]string{"ro.txt": "read me\n"})
	before := run(t, "sha256sum", img)
	dev := attachLoop(t, img)
	ta := startAgent(t, context.Background(), mapDisks{"qmount0": dev})
	ta.expect(t, wire.TypeHello)

	// No type: the agent detects ext4 from the superblock.
	ta.send(t, &wire.Message{Type: wire.TypeMount, Mount: &wire.MountRequest{Disks: []string{"qmount0"}, ReadOnly: true}})
	m := ta.expect(t, wire.TypeMounted)
	if m.FSType != "ext4" || !m.ReadOnly {
		t.Errorf("mounted %+v, want ext4 read-only", m)
	}
	// The block device itself was made read-only.
	if got := strings.TrimSpace(run(t, "blockdev", "--getro", dev)); got != "1" {
		t.Errorf("blockdev --getro = %s, want 1", got)
	}
	c, root := ta.dial9P(t)
	if got := readFile9P(t, root, "ro.txt"); got != "read me\n" {
		t.Errorf("ro.txt = %q", got)
	}
	if err := create9P(root, "nope.txt", "x"); err == nil {
		t.Error("created a file on a read-only mount")
	}
	root.Close()
	c.Close()

	ta.send(t, &wire.Message{Type: wire.TypeShutdown})
	ta.expect(t, wire.TypeBye)
	if end, err := ta.wait(t); end != EndShutdown || err != nil {
		t.Errorf("Serve = %v, %v", end, err)
	}
	detachLoop(t, dev)
	if after := run(t, "sha256sum", img); after != before {
		t.Error("a read-only mount changed the image")
	}
	checkImage(t, img)
}

func TestAgentMountErrors(t *testing.T) {
	requireHostMount(t)
	img := filepath.Join(t.TempDir(), "zero.img")
	run(t, "truncate", "-s", "8M", img) // all zeros: no superblock
	dev := attachLoop(t, img)
	ta := startAgent(t, context.Background(), mapDisks{"qmount0": dev})
	ta.expect(t, wire.TypeHello)

	for _, tc := range []struct {
		req      wire.MountRequest
		step     string
		contains []string
	}{
		// The kernel's own words, naming the device.
		{wire.MountRequest{Disks: []string{"qmount0"}, FSType: "ext4"}, "mount",
			[]string{"EXT4-fs (" + filepath.Base(dev) + ")", "Can't find ext4 filesystem", "invalid argument"}},
		{wire.MountRequest{Disks: []string{"qmount0"}, FSType: "nosuchfs"}, "mount", []string{"no such device"}},
		{wire.MountRequest{Disks: []string{"qmount0", "qmount1"}, FSType: "ext4"}, "disk", []string{"qmount1"}},
	} {
		ta.send(t, &wire.Message{Type: wire.TypeMount, Mount: &tc.req})
		m := ta.expect(t, wire.TypeError)
		t.Logf("%s: %s", m.Step, m.Error)
		if m.Step != tc.step {
			t.Errorf("%+v: step %q, want %q (%s)", tc.req, m.Step, tc.step, m.Error)
		}
		for _, want := range tc.contains {
			if !strings.Contains(m.Error, want) {
				t.Errorf("%+v: error %q lacks %q", tc.req, m.Error, want)
			}
		}
	}
	if isMounted(t, ta.mountDir) {
		t.Error("mounted after failures")
	}
	ta.send(t, &wire.Message{Type: wire.TypeShutdown})
	ta.expect(t, wire.TypeBye)
	if end, err := ta.wait(t); end != EndShutdown || err != nil {
		t.Errorf("Serve = %v, %v", end, err)
	}
}

// TestAgentHostLost kills the host's control connection while a 9P client
// holds a file open: the agent must stop serving, unmount and end by
// itself, with the fsync'd data on the image and the image clean.
func TestAgentHostLost(t *testing.T) {
	requireHostMount(t)
	img := makeExt4(t, map[string]string{"a.txt": "a\n"})
	dev := attachLoop(t, img)
	ta := startAgent(t, context.Background(), mapDisks{"qmount0": dev})
	ta.expect(t, wire.TypeHello)
	ta.send(t, &wire.Message{Type: wire.TypeMount, Mount: &wire.MountRequest{Disks: []string{"qmount0"}, FSType: "ext4"}})
	ta.expect(t, wire.TypeMounted)

	c, root := ta.dial9P(t)
	defer c.Close()
	if err := create9P(root, "synced.txt", "fsync'd before the crash\n"); err != nil {
		t.Fatal(err)
	}
	_, open, err := root.Walk([]string{"a.txt"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := open.Open(p9.ReadOnly); err != nil {
		t.Fatal(err)
	}
	// The host dies: its end of the control connection goes away.
	ta.host.Close()
	if end, err := ta.wait(t); end != EndLost || err != nil {
		t.Errorf("Serve = %v, %v; want %v and a clean teardown", end, err, EndLost)
	}
	if isMounted(t, ta.mountDir) {
		t.Error("still mounted after the host was lost")
	}
	// The 9P connection was cut too.
	if _, _, _, err := open.GetAttr(p9.AttrMaskAll); err == nil {
		t.Error("9P still answers after teardown")
	}
	detachLoop(t, dev)
	if got := checkImage(t, img, "synced.txt"); got["synced.txt"] != "fsync'd before the crash\n" {
		t.Errorf("image holds %q", got)
	}
}

// TestAgentCanceled ends the session from the guest side (SIGTERM in the
// guest cancels the context): the agent unmounts and still says bye.
func TestAgentCanceled(t *testing.T) {
	requireHostMount(t)
	img := makeExt4(t, map[string]string{"a.txt": "a\n"})
	dev := attachLoop(t, img)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ta := startAgent(t, ctx, mapDisks{"qmount0": dev})
	ta.expect(t, wire.TypeHello)
	ta.send(t, &wire.Message{Type: wire.TypeMount, Mount: &wire.MountRequest{Disks: []string{"qmount0"}, FSType: "ext4"}})
	ta.expect(t, wire.TypeMounted)
	cancel()
	ta.expect(t, wire.TypeBye)
	if end, err := ta.wait(t); end != EndCanceled || err != nil {
		t.Errorf("Serve = %v, %v", end, err)
	}
	if isMounted(t, ta.mountDir) {
		t.Error("still mounted")
	}
	detachLoop(t, dev)
	checkImage(t, img)
}
