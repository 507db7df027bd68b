package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"

	"github.com/qmount/qmount/p9server"
)

// makeFiles creates n empty files directly in dir (not through a mount).
func makeFiles(t testing.TB, dir string, prefix string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s%06d", prefix, i)))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
}

// TestLsLongRequests: listing 10,000 files with their attributes (what
// ls -l does: getdents + lstat of each) costs a few dozen 9P requests.
func TestLsLongRequests(t *testing.T) {
	data := t.TempDir()
	if err := os.Mkdir(filepath.Join(data, "big"), 0o755); err != nil {
		t.Fatal(err)
	}
	makeFiles(t, filepath.Join(data, "big"), "f", 10000)
	e := mountEnv(t, data)
	before := e.requests()
	var out []byte
	var err error
	if _, lerr := exec.LookPath("ls"); lerr == nil {
		out, err = exec.Command("ls", "-l", e.path("big")).Output()
	} else {
		t.Fatal("ls not found")
	}
	if err != nil {
		t.Fatal(err)
	}
	used := e.requests() - before
	if lines := strings.Count(string(out), "\n"); lines != 10001 {
		t.Errorf("ls -l printed %d lines, want 10001", lines)
	}
	t.Logf("ls -l of 10,000 files: %d requests %v", used, e.m.Client().Stats().ByType)
	if used > 40 {
		t.Errorf("ls -l of 10,000 files took %d requests, want at most 40", used)
	}
	// A second listing costs no per-entry request: the kernel keeps the
	// entries and attributes, and at most re-reads the listing (its
	// cached directory pages can be evicted: 3 batches of 3 requests).
	before = e.requests()
	if err := exec.Command("ls", "-l", e.path("big")).Run(); err != nil {
		t.Fatal(err)
	}
	if used := e.requests() - before; used > 10 {
		t.Errorf("second ls -l took %d requests, want at most 10", used)
	}
}

// TestNoFidLeak: 10,000 opens, closes and lookups leave the server with
// the files it had before once the kernel forgets the inodes.
func TestNoFidLeak(t *testing.T) {
	data := t.TempDir()
	os.Mkdir(filepath.Join(data, "d"), 0o755)
	makeFiles(t, filepath.Join(data, "d"), "f", 100)
	e := mountEnv(t, data)
	dropCaches(t)
	time.Sleep(100 * time.Millisecond)
	base := e.srv.OpenFiles()
	for i := 0; i < 10000; i++ {
		name := e.path(fmt.Sprintf("d/f%06d", i%100))
		f, err := os.OpenFile(name, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		if _, err := os.Stat(e.path(fmt.Sprintf("d/missing%d", i%50))); !os.IsNotExist(err) {
			t.Fatalf("stat missing: %v", err)
		}
		if i%1000 == 0 {
			dropCaches(t) // forget, so that lookups repeat
		}
	}
	dropCaches(t)
	deadline := time.Now().Add(10 * time.Second)
	for e.srv.OpenFiles() > base && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := e.srv.OpenFiles(); got > base {
		t.Errorf("server holds %d files, %d before", got, base)
	}
	t.Logf("server files: %d before, %d after; %v", base, e.srv.OpenFiles(), e.m.Client().Stats().ByType)
}

// TestHugeDirStable: a 100,000-entry directory lists completely, each
// name once, while files are being added to it.
func TestHugeDirStable(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	data := t.TempDir()
	os.Mkdir(filepath.Join(data, "huge"), 0o755)
	makeFiles(t, filepath.Join(data, "huge"), "f", 100000)
	e := mountEnv(t, data)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			f, err := os.Create(e.path(fmt.Sprintf("huge/new%06d", i)))
			if err != nil {
				t.Error(err)
				return
			}
			f.Close()
		}
	}()
	for round := 0; round < 2; round++ {
		d, err := os.Open(e.path("huge"))
		if err != nil {
			t.Fatal(err)
		}
		seen := make(map[string]int)
		for {
			names, err := d.Readdirnames(1000)
			for _, n := range names {
				seen[n]++
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		d.Close()
		for i := 0; i < 100000; i++ {
			if c := seen[fmt.Sprintf("f%06d", i)]; c != 1 {
				t.Fatalf("round %d: f%06d seen %d times", round, i, c)
			}
		}
		for n, c := range seen {
			if c != 1 {
				t.Fatalf("round %d: %s seen %d times", round, n, c)
			}
		}
	}
	close(stop)
	wg.Wait()
}

func TestAppend(t *testing.T) {
	e := mountEnv(t, "")
	p := e.path("log")
	if err := os.WriteFile(p, []byte("start\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Two descriptors appending in turn, and concurrent appenders.
	f1, _ := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	f2, _ := os.OpenFile(p, os.O_RDWR|os.O_APPEND, 0)
	f1.WriteString("one\n")
	f2.WriteString("two\n")
	f1.WriteString("three\n")
	f1.Close()
	f2.Close()
	got, _ := os.ReadFile(p)
	if string(got) != "start\none\ntwo\nthree\n" {
		t.Errorf("file = %q", got)
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			for i := 0; i < 50; i++ {
				f.WriteString(fmt.Sprintf("g%d-%02d\n", g, i))
			}
		}(g)
	}
	wg.Wait()
	got, _ = os.ReadFile(p)
	lines := strings.Split(strings.TrimSuffix(string(got), "\n"), "\n")
	if len(lines) != 4+8*50 {
		t.Fatalf("%d lines after concurrent appends, want %d", len(lines), 4+8*50)
	}
	// The server's copy is the same.
	native, _ := os.ReadFile(filepath.Join(e.data, "log"))
	if !bytes.Equal(native, got) {
		t.Error("server file differs from what the mount shows")
	}
}

// mmapChildEnv names the file a child process maps (see TestMain).
const mmapChildEnv = "QMOUNT_TEST_MMAP"

func TestMain(m *testing.M) {
	if p := os.Getenv(mmapChildEnv); p != "" {
		if err := mmapWrite(p); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// mmapWrite writes two pages of p through a shared mapping, syncs it and
// checks that another descriptor reads what was written.
func mmapWrite(p string) error {
	const size = 3 * 4096
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return err
	}
	defer unix.Munmap(m)
	copy(m[100:], "written through mmap")
	copy(m[2*4096+5:], "second page")
	if err := unix.Msync(m, unix.MS_SYNC); err != nil {
		return fmt.Errorf("msync: %w", err)
	}
	g, err := os.Open(p)
	if err != nil {
		return err
	}
	defer g.Close()
	buf := make([]byte, 20)
	if _, err := g.ReadAt(buf, 100); err != nil {
		return err
	}
	if string(buf) != "written through mmap" {
		return fmt.Errorf("read via another descriptor: %q", buf)
	}
	return nil
}

func TestSharedMmap(t *testing.T) {
	data := t.TempDir()
	e := mountEnv(t, data)
	p := e.path("m")
	const size = 3 * 4096
	if err := os.WriteFile(p, make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	// The mapping is used by another process: a page fault served by
	// this process's FUSE server cannot be preempted, so a garbage
	// collection starting meanwhile would stop the server for good.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), mmapChildEnv+"="+p)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mmap in a child process: %v: %s", err, out)
	}
	// The server's file has it, and so does a fresh mount.
	native, _ := os.ReadFile(filepath.Join(data, "m"))
	if string(native[100:120]) != "written through mmap" || string(native[2*4096+5:2*4096+16]) != "second page" {
		t.Errorf("server file: %q", native[100:120])
	}
	e.unmount()
	e2 := mountEnv(t, data)
	again, _ := os.ReadFile(e2.path("m"))
	if !bytes.Equal(again, native) {
		t.Error("remount shows different contents")
	}
}

func TestHardLinkInode(t *testing.T) {
	e := mountEnv(t, "")
	os.WriteFile(e.path("a"), []byte("x"), 0o644)
	os.Mkdir(e.path("sub"), 0o755)
	if err := os.Link(e.path("a"), e.path("sub/b")); err != nil {
		t.Fatal(err)
	}
	var sa, sb, sn unix.Stat_t
	unix.Stat(e.path("a"), &sa)
	unix.Stat(e.path("sub/b"), &sb)
	unix.Stat(filepath.Join(e.data, "a"), &sn)
	if sa.Ino != sb.Ino || sa.Nlink != 2 || sb.Nlink != 2 {
		t.Errorf("links: ino %d/%d nlink %d/%d", sa.Ino, sb.Ino, sa.Nlink, sb.Nlink)
	}
	if sa.Ino != sn.Ino {
		t.Errorf("inode number %d, server's %d", sa.Ino, sn.Ino)
	}
	// After forgetting everything, a lookup by either name agrees.
	dropCaches(t)
	unix.Stat(e.path("sub/b"), &sb)
	unix.Stat(e.path("a"), &sa)
	if sa.Ino != sb.Ino {
		t.Errorf("after forget: ino %d/%d", sa.Ino, sb.Ino)
	}
}

func TestStatfs(t *testing.T) {
	e := mountEnv(t, "")
	var got, want unix.Statfs_t
	if err := unix.Statfs(e.mnt, &got); err != nil {
		t.Fatal(err)
	}
	unix.Statfs(e.data, &want)
	if got.Blocks != want.Blocks || got.Bsize != want.Bsize || got.Files != want.Files || got.Namelen != want.Namelen {
		t.Errorf("statfs = %+v, server dir %+v", got, want)
	}
	out, err := exec.Command("df", e.mnt).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "qmount") {
		t.Errorf("df: %v\n%s", err, out)
	}
}

func TestConcurrentReadWrite(t *testing.T) {
	e := mountEnv(t, "")
	const files, size = 4, 1 << 20
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	// Writers of distinct files, with readers checking them.
	for i := 0; i < files; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			want := bytes.Repeat([]byte{byte('a' + i)}, size)
			p := e.path(fmt.Sprintf("f%d", i))
			if err := os.WriteFile(p, want, 0o644); err != nil {
				errs <- err
				return
			}
			for r := 0; r < 3; r++ {
				got, err := os.ReadFile(p)
				if err != nil || !bytes.Equal(got, want) {
					errs <- fmt.Errorf("f%d: %v (%d bytes)", i, err, len(got))
					return
				}
			}
		}(i)
	}
	// Many goroutines writing disjoint blocks of one shared file.
	shared := e.path("shared")
	os.WriteFile(shared, nil, 0o644)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			f, err := os.OpenFile(shared, os.O_RDWR, 0)
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			rng := rand.New(rand.NewSource(int64(g)))
			block := bytes.Repeat([]byte{byte(g)}, 8192)
			for k := 0; k < 20; k++ {
				if _, err := f.WriteAt(block, int64(g*8192)); err != nil {
					errs <- err
					return
				}
				buf := make([]byte, 8192)
				if _, err := f.ReadAt(buf, int64(rng.Intn(16)*8192)); err != nil && err != io.EOF {
					errs <- err
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got, _ := os.ReadFile(shared)
	if len(got) != 16*8192 {
		t.Fatalf("shared file is %d bytes", len(got))
	}
	for g := 0; g < 16; g++ {
		if !bytes.Equal(got[g*8192:(g+1)*8192], bytes.Repeat([]byte{byte(g)}, 8192)) {
			t.Errorf("block %d corrupt", g)
		}
	}
}

// TestLocks: POSIX locks between two processes' worth of descriptors
// (OFD locks, which the kernel tracks per open file) and classic fcntl
// locks, with the kernel's lock manager (default) and forwarded to the
// server.
func TestLocks(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
	}{{"kernel", nil}, {"server", []Option{WithServerLocks()}}} {
		t.Run(tc.name, func(t *testing.T) {
			e := mountEnv(t, "", tc.opts...)
			p := e.path("lockfile")
			os.WriteFile(p, []byte("data"), 0o644)
			f1, _ := os.OpenFile(p, os.O_RDWR, 0)
			f2, _ := os.OpenFile(p, os.O_RDWR, 0)
			defer f1.Close()
			defer f2.Close()
			wr := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
			if err := unix.FcntlFlock(f1.Fd(), unix.F_OFD_SETLK, &wr); err != nil {
				t.Fatalf("first lock: %v", err)
			}
			err := unix.FcntlFlock(f2.Fd(), unix.F_OFD_SETLK, &wr)
			if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) {
				t.Fatalf("conflicting lock: %v, want EAGAIN", err)
			}
			// A blocking lock waits until the holder unlocks.
			got := make(chan error, 1)
			go func() {
				l := wr
				got <- unix.FcntlFlock(f2.Fd(), unix.F_OFD_SETLKW, &l)
			}()
			select {
			case err := <-got:
				t.Fatalf("blocking lock returned early: %v", err)
			case <-time.After(200 * time.Millisecond):
			}
			un := unix.Flock_t{Type: unix.F_UNLCK}
			if err := unix.FcntlFlock(f1.Fd(), unix.F_OFD_SETLK, &un); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-got:
				if err != nil {
					t.Fatalf("blocking lock: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("blocking lock never granted")
			}
		})
	}
}

// TestGenerations: an inode number reused after its file was removed gets
// a new FUSE generation; one still in use keeps its generation.
func TestGenerations(t *testing.T) {
	f := &fsys{inos: make(map[uint64]*inoState)}
	q := p9.QID{Path: 42}
	a := f.stable(q, syscall.S_IFREG)
	if b := f.stable(q, syscall.S_IFREG|0o644); b.Gen != a.Gen {
		t.Errorf("live inode: gen %d -> %d", a.Gen, b.Gen)
	}
	f.inoMu.Lock()
	f.inos[42].dead = true // as markDead does after the last unlink
	f.inoMu.Unlock()
	b := f.stable(q, syscall.S_IFREG)
	if b.Gen != a.Gen+1 || b.Ino != 42 {
		t.Errorf("reused inode: %+v after %+v", b, a)
	}
}

// TestRequestTimeout: a server that stops answering makes operations fail
// with ETIMEDOUT instead of hanging.
func TestRequestTimeout(t *testing.T) {
	requireFUSE(t)
	cc, sc := socketPair(t)
	// Answer version and attach/getattr with the real server, then stall:
	// proxy through p9server until told to stop forwarding.
	data := t.TempDir()
	os.WriteFile(filepath.Join(data, "f"), []byte("x"), 0o644)
	srvSide, proxySide := socketPair(t)
	srv := newTestServer(t, data)
	go srv.Serve(context.Background(), srvSide)
	var stalled sync.Mutex
	go io.Copy(proxySide, &gate{r: sc, mu: &stalled})
	go io.Copy(sc, proxySide)
	mnt := t.TempDir()
	m, err := Mount(context.Background(), cc, mnt, WithRequestTimeout(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Wait() }()
	defer func() {
		stalled.TryLock()
		stalled.Unlock()
		m.Unmount()
		<-done
	}()
	stalled.Lock() // requests stop reaching the server
	_, err = os.Stat(filepath.Join(mnt, "f"))
	if !errors.Is(err, syscall.ETIMEDOUT) {
		t.Errorf("stat with a stalled server: %v, want ETIMEDOUT", err)
	}
}

// gate forwards reads from r unless mu is held.
type gate struct {
	r  io.Reader
	mu *sync.Mutex
}

func (g *gate) Read(p []byte) (int, error) {
	n, err := g.r.Read(p)
	g.mu.Lock()
	g.mu.Unlock()
	return n, err
}

func newTestServer(t testing.TB, dir string) *p9server.Server {
	t.Helper()
	srv, err := p9server.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// TestListingAnswersLookups: after a plain listing (readdir without
// stat, as find does; the kernel asks for attributes only in its first
// request), stat of every entry and of absent names costs no further
// requests, and every change made through the mount is seen at once.
func TestListingAnswersLookups(t *testing.T) {
	data := t.TempDir()
	dir := filepath.Join(data, "d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	makeFiles(t, dir, "f", 3000)
	e := mountEnv(t, data)
	before := e.requests()
	ents, err := os.ReadDir(e.path("d"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 3000 {
		t.Fatalf("listed %d entries, want 3000", len(ents))
	}
	for i := 0; i < 3000; i++ {
		if _, err := os.Lstat(e.path(fmt.Sprintf("d/f%06d", i))); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(e.path(fmt.Sprintf("d/absent%d", i))); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("lstat of an absent name: %v", err)
		}
	}
	used := e.requests() - before
	t.Logf("readdir + 6,000 lstats: %d requests %v", used, e.m.Client().Stats().ByType)
	if used > 30 {
		t.Errorf("readdir + 6,000 lstats took %d requests, want at most 30", used)
	}

	// Changes through the mount: a new name, a grown file, a removed one.
	if err := os.WriteFile(e.path("d/new"), []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.path("d/f000001"), []byte("grown"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(e.path("d/f000002")); err != nil {
		t.Fatal(err)
	}
	dropCaches(t) // later stats are lookups again
	if fi, err := os.Lstat(e.path("d/new")); err != nil || fi.Size() != 3 {
		t.Errorf("new file: %v, %v", fi, err)
	}
	if fi, err := os.Lstat(e.path("d/f000001")); err != nil || fi.Size() != 5 {
		t.Errorf("grown file: %v, %v", fi, err)
	}
	if _, err := os.Lstat(e.path("d/f000002")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("removed file: %v", err)
	}
	if fi, err := os.Lstat(e.path("d/f000003")); err != nil || fi.Size() != 0 {
		t.Errorf("untouched file: %v, %v", fi, err)
	}

	// A directory made through the mount, entries moved in and out,
	// a hard link, a directory removed: each listing follows.
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Mkdir(e.path("d/sub"), 0o755))
	must(os.WriteFile(e.path("d/sub/x"), []byte("x"), 0o644))
	must(os.Rename(e.path("d/new"), e.path("d/sub/moved")))
	must(os.Rename(e.path("d/sub/x"), e.path("d/x")))
	must(os.Link(e.path("d/f000004"), e.path("d/sub/link")))
	must(os.Mkdir(e.path("d/gone"), 0o755))
	must(os.Remove(e.path("d/gone")))
	dropCaches(t)
	for _, c := range []struct {
		name string
		size int64 // -1: absent
	}{{"d/new", -1}, {"d/sub/moved", 3}, {"d/sub/x", -1}, {"d/x", 1}, {"d/sub/link", 0}, {"d/gone", -1}, {"d/sub/absent", -1}} {
		fi, err := os.Lstat(e.path(c.name))
		switch {
		case c.size < 0 && !errors.Is(err, os.ErrNotExist):
			t.Errorf("%s: %v, %v; want it absent", c.name, fi, err)
		case c.size >= 0 && (err != nil || fi.Size() != c.size):
			t.Errorf("%s: %v, %v; want %d bytes", c.name, fi, err, c.size)
		}
	}
	if fi, err := os.Lstat(e.path("d/f000004")); err != nil || fi.Sys().(*syscall.Stat_t).Nlink != 2 {
		t.Errorf("linked file: %v, %v; want 2 links", fi, err)
	}
	ents, err = os.ReadDir(e.path("d/sub"))
	if err != nil || len(ents) != 2 {
		t.Errorf("d/sub lists %v, %v; want moved and link", ents, err)
	}
}

// TestCreateRequests: files created in a directory made through the
// mount need no lookup of their names (the directory's listing is known
// complete) and no xattr request (the kernel's security.capability
// check before a write is answered from the parent having no default
// ACL); their attributes are read back when they are closed, so a stat
// after costs nothing; stat of many names of a directory never listed
// reads its listing instead of one lookup each.
func TestCreateRequests(t *testing.T) {
	data := t.TempDir()
	if err := os.Mkdir(filepath.Join(data, "old"), 0o755); err != nil {
		t.Fatal(err)
	}
	makeFiles(t, filepath.Join(data, "old"), "f", 3000)
	e := mountEnv(t, data)
	if err := os.Mkdir(e.path("new"), 0o755); err != nil {
		t.Fatal(err)
	}
	const n = 1000
	content := bytes.Repeat([]byte("c"), 4096)
	before := e.m.Client().Stats()
	for i := 0; i < n; i++ {
		if err := os.WriteFile(e.path(fmt.Sprintf("new/f%04d", i)), content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	after := e.m.Client().Stats()
	per := float64(after.Total-before.Total) / n
	t.Logf("create + write + close: %.1f requests per file %v", per, after.ByType)
	for _, typ := range []string{"Twalkgetattr", "Txattrwalk"} {
		if d := after.ByType[typ] - before.ByType[typ]; d > 5 {
			t.Errorf("%d %s requests for %d new files, want none per file", d, typ, n)
		}
	}
	// Twalk, Tlcreate, Tgetattr of the file and of the directory (in
	// parallel), Twrite, Tgetattr on close, Tclunk.
	if per > 7 {
		t.Errorf("%.1f requests per new file, want at most 7", per)
	}

	before = e.m.Client().Stats()
	for i := 0; i < n; i++ {
		fi, err := os.Stat(e.path(fmt.Sprintf("new/f%04d", i)))
		if err != nil || fi.Size() != int64(len(content)) {
			t.Fatalf("stat of a new file: %v, %v", fi, err)
		}
	}
	// Closes are released in the background: the last few may still be
	// reading their attributes back.
	if used := e.m.Client().Stats().Total - before.Total; used > 50 {
		t.Errorf("stat of %d files just written took %d requests, want almost none", n, used)
	}

	before = e.m.Client().Stats()
	for i := 0; i < 3000; i++ {
		if _, err := os.Lstat(e.path(fmt.Sprintf("old/f%06d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Lstat(e.path("old/absent")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("absent name: %v", err)
	}
	after = e.m.Client().Stats()
	t.Logf("stat of 3,000 names never listed: %d requests %v", after.Total-before.Total, after.ByType)
	if used := after.Total - before.Total; used > 40 {
		t.Errorf("stat of 3,000 names of a directory never listed took %d requests, want at most 40", used)
	}
}

// TestFindTypes: find reads listings without attributes after their
// first batch (the server reads no inode); the types it sees (find
// -type uses the directory entries' types) and names are those of the
// files, and ls -l afterwards still costs a few dozen requests.
func TestFindTypes(t *testing.T) {
	data := t.TempDir()
	for d := 0; d < 3; d++ {
		dir := filepath.Join(data, fmt.Sprintf("d%d", d))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		makeFiles(t, dir, "f", 4000)
		for i := 0; i < 300; i++ {
			p := filepath.Join(dir, fmt.Sprintf("z%03d", i))
			var err error
			switch i % 4 {
			case 0:
				err = os.Mkdir(p, 0o700)
			case 1:
				err = os.Symlink("f000001", p)
			case 2:
				err = unix.Mkfifo(p, 0o600)
			default:
				err = unix.Mknod(p, unix.S_IFSOCK|0o600, 0)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	e := mountEnv(t, data)
	dropCaches(t)
	list := func(root string) string {
		t.Helper()
		out, err := exec.Command("find", root, "-printf", "%y %P\n").Output()
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		sort.Strings(lines)
		return strings.Join(lines, "\n")
	}
	before := e.m.Client().Stats()
	got, want := list(e.mnt), list(data)
	after := e.m.Client().Stats()
	if got != want {
		t.Errorf("find through the mount differs from find on the directory (%d vs %d bytes)", len(got), len(want))
	}
	t.Logf("find over %d entries: %d requests %v", strings.Count(want, "\n")+1, after.Total-before.Total, after.ByType)
	for _, typ := range []string{"f", "d", "l", "p", "s"} {
		out, err := exec.Command("find", e.mnt, "-type", typ).Output()
		if err != nil {
			t.Fatal(err)
		}
		wantOut, _ := exec.Command("find", data, "-type", typ).Output()
		if g, w := bytes.Count(out, []byte("\n")), bytes.Count(wantOut, []byte("\n")); g != w {
			t.Errorf("find -type %s: %d entries through the mount, %d on the directory", typ, g, w)
		}
	}
	before = e.m.Client().Stats()
	out, err := exec.Command("ls", "-l", e.path("d1")).Output()
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(string(out), "\n"); lines != 4301 {
		t.Errorf("ls -l printed %d lines, want 4301", lines)
	}
	// ls -l reads the 75 symlinks' targets (Twalk, Treadlink, Tclunk
	// each); entries cost no lookup.
	after = e.m.Client().Stats()
	if used := after.Total - before.Total; used > 40+3*75 {
		t.Errorf("ls -l after find took %d requests, want at most %d", used, 40+3*75)
	}
	if lookups := after.ByType["Twalkgetattr"] - before.ByType["Twalkgetattr"]; lookups > 10 {
		t.Errorf("ls -l after find sent %d lookups, want the listing read instead", lookups)
	}
}

// TestServerFilesBounded: files used through the mount (created,
// written, chmod-ed, their xattrs listed) leave no descriptor open on
// the server while the kernel keeps their inodes cached: a guest has a
// limited number of descriptors (tar -x of 3,000 files once ran out).
func TestServerFilesBounded(t *testing.T) {
	e := mountEnv(t, "")
	if err := os.Mkdir(e.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	base := e.srv.OpenFiles()
	const n = 2000
	for i := 0; i < n; i++ {
		p := e.path(fmt.Sprintf("d/f%04d", i))
		if err := os.WriteFile(p, []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, time.Unix(1e9, 0), time.Unix(1e9, 0)); err != nil {
			t.Fatal(err)
		}
	}
	// The kernel still caches every inode (no drop_caches).
	if got := e.srv.OpenFiles(); got > base+10 {
		t.Errorf("server holds %d files after using %d through the mount, %d before", got, n, base)
	}
	fi, err := os.Stat(e.path("d/f0001"))
	if err != nil || fi.Mode().Perm() != 0o600 || fi.ModTime().Unix() != 1e9 {
		t.Errorf("f0001: %v %v", fi, err)
	}
}

// TestSetattrWhileOpen: chmod, chown and utimes by name of a file that is
// open (what tar does after writing each file) use the open file's fid
// instead of walking one; truncate by name of a file open only for
// reading still works (a read-only fid cannot truncate).
func TestSetattrWhileOpen(t *testing.T) {
	e := mountEnv(t, "")
	p := e.path("f")
	w, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	before := e.m.Client().Stats()
	if err := os.Chmod(p, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, 1234, 5678); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, time.Unix(1e9, 0), time.Unix(1e9, 0)); err != nil {
		t.Fatal(err)
	}
	after := e.m.Client().Stats()
	if walks := after.ByType["Twalk"] - before.ByType["Twalk"]; walks != 0 {
		t.Errorf("setattr by name of an open file walked %d fids, want none", walks)
	}
	w.Close()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o640 || st.Uid != 1234 || st.Gid != 5678 || fi.ModTime().Unix() != 1e9 || fi.Size() != 10 {
		t.Errorf("after setattr: mode %v uid %d gid %d mtime %v size %d", fi.Mode(), st.Uid, st.Gid, fi.ModTime(), fi.Size())
	}
	r, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := os.Truncate(p, 4); err != nil {
		t.Fatalf("truncate by name while open read-only: %v", err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Size() != 4 {
		t.Errorf("after truncate: %v, %v", fi, err)
	}
	b, err := os.ReadFile(filepath.Join(e.data, "f"))
	if err != nil || string(b) != "0123" {
		t.Errorf("server file: %q, %v", b, err)
	}
}
