package ninep

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hugelgupf/p9/fsimpl/localfs"
	"github.com/hugelgupf/p9/p9"
)

// plainConn hides *os.File's syscall.Conn from the p9 library.
type plainConn struct{ f *os.File }

func (c plainConn) Read(b []byte) (int, error)  { return c.f.Read(b) }
func (c plainConn) Write(b []byte) (int, error) { return c.f.Write(b) }
func (c plainConn) Close() error                { return c.f.Close() }

func socketpair(t testing.TB) (*os.File, *os.File) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC|syscall.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(fds[0]), "client"), os.NewFile(uintptr(fds[1]), "server")
}

// localServer serves dir with the p9 library's localfs on a socketpair.
func localServer(t testing.TB, dir string) *Client {
	t.Helper()
	cf, sf := socketpair(t)
	srv := p9.NewServer(localfs.Attacher(dir))
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Handle(plainConn{sf}, plainConn{sf})
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := New(ctx, cf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	return c
}

func TestBasicOps(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hello"), []byte("hello, world"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := localServer(t, dir)
	ctx := context.Background()
	if c.Msize() < 1<<20 {
		t.Errorf("msize %d < 1 MiB", c.Msize())
	}
	if c.Version() < 2 {
		t.Errorf("version %d: no Twalkgetattr", c.Version())
	}
	root, q, err := c.Attach(ctx, "root", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if q.Type != p9.TypeDir {
		t.Errorf("root qid type %v", q.Type)
	}
	f, qids, valid, attr, err := c.WalkGetattr(ctx, root, []string{"hello"})
	if err != nil {
		t.Fatal(err)
	}
	if len(qids) != 1 || !valid.Size || attr.Size != 12 || !attr.Mode.IsRegular() {
		t.Fatalf("walkgetattr: %v %v %v", qids, valid, attr)
	}
	if _, _, err := c.Open(ctx, f, syscall.O_RDWR); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	n, err := c.Read(ctx, f, 7, buf)
	if err != nil || string(buf[:n]) != "world" {
		t.Fatalf("read = %q, %v", buf[:n], err)
	}
	if n, err := c.Write(ctx, f, 12, []byte("!!")); err != nil || n != 2 {
		t.Fatalf("write = %d, %v", n, err)
	}
	c.Clunk(f)
	got, _ := os.ReadFile(filepath.Join(dir, "hello"))
	if string(got) != "hello, world!!" {
		t.Errorf("file = %q", got)
	}

	// Errors come back as errnos.
	if _, _, err := c.Walk(ctx, root, []string{"missing"}); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("walk missing: %v", err)
	}
	if _, _, err := c.Walk(ctx, root, []string{".."}); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("walk ..: %v", err)
	}

	// Create, mkdir, rename, unlink.
	d, _, err := c.Walk(ctx, root, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Create(ctx, d, "new", syscall.O_RDWR, 0o640, p9.NoUID, p9.NoGID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(ctx, d, 0, []byte("x")); err != nil {
		t.Fatal(err)
	}
	c.Clunk(d)
	if _, err := c.Mkdir(ctx, root, "sub", 0o755, p9.NoUID, p9.NoGID); err != nil {
		t.Fatal(err)
	}
	sub, _, err := c.Walk(ctx, root, []string{"sub"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RenameAt(ctx, root, "new", sub, "moved"); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(dir, "sub", "moved")); err != nil || st.Mode().Perm() != 0o640 {
		t.Errorf("moved: %v %v", st, err)
	}
	if err := c.UnlinkAt(ctx, root, "sub", 0x200); !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
		t.Errorf("rmdir non-empty: %v", err)
	}
	if err := c.UnlinkAt(ctx, sub, "moved", 0); err != nil {
		t.Fatal(err)
	}
	c.Clunk(sub)

	// Readdir on an opened clone.
	rd, _, err := c.Walk(ctx, root, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Open(ctx, rd, syscall.O_RDONLY); err != nil {
		t.Fatal(err)
	}
	ents, err := c.Readdir(ctx, rd, 0, 65536)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, e := range ents {
		names[e.Name] = true
	}
	if !names["hello"] || !names["sub"] || len(names) != 2 {
		t.Errorf("readdir = %v", names)
	}
	c.Clunk(rd)

	st := c.Stats()
	if st.ByType["Twalkgetattr"] != 1 || st.ByType["Tversion"] != 1 || st.Total == 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestConcurrentRequests(t *testing.T) {
	dir := t.TempDir()
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	if err := os.WriteFile(filepath.Join(dir, "big"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	c := localServer(t, dir)
	ctx := context.Background()
	root, _, err := c.Attach(ctx, "root", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			f, _, err := c.Walk(ctx, root, []string{"big"})
			if err != nil {
				errs <- err
				return
			}
			defer c.Clunk(f)
			if _, _, err := c.Open(ctx, f, syscall.O_RDONLY); err != nil {
				errs <- err
				return
			}
			buf := make([]byte, 4096)
			for i := 0; i < 20; i++ {
				off := (g*4096*20 + i*4096) % len(data)
				n, err := c.Read(ctx, f, uint64(off), buf)
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(buf[:n], data[off:off+n]) {
					errs <- errors.New("data mismatch")
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
	// One large read returns the whole MiB in one request.
	f, _, _ := c.Walk(ctx, root, []string{"big"})
	c.Open(ctx, f, syscall.O_RDONLY)
	buf := make([]byte, 1<<20)
	before := c.Stats().ByType["Tread"]
	n, err := c.Read(ctx, f, 0, buf)
	if err != nil || n != 1<<20 || !bytes.Equal(buf, data) {
		t.Errorf("big read: %d, %v", n, err)
	}
	if got := c.Stats().ByType["Tread"] - before; got != 1 {
		t.Errorf("1 MiB read took %d requests", got)
	}
}

// fakeServer answers Tversion properly, then replies to each request
// with whatever reply returns (nil: no answer).
func fakeServer(t *testing.T, reply func(typ uint8, tag uint16, body []byte) []byte) (*Client, *os.File) {
	t.Helper()
	cf, sf := socketpair(t)
	go func() {
		defer sf.Close()
		for {
			var hdr [7]byte
			if _, err := io.ReadFull(sf, hdr[:]); err != nil {
				return
			}
			size := binary.LittleEndian.Uint32(hdr[:])
			body := make([]byte, size-7)
			if _, err := io.ReadFull(sf, body); err != nil {
				return
			}
			typ, tag := hdr[4], binary.LittleEndian.Uint16(hdr[5:])
			var out []byte
			if typ == tTversion {
				var e enc
				e.u32(DefaultMsize)
				e.str("9P2000.L.Google.7")
				out = frame(tTversion+1, tag, e.b)
			} else {
				out = reply(typ, tag, body)
			}
			if out != nil {
				if _, err := sf.Write(out); err != nil {
					return
				}
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := New(ctx, cf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, sf
}

func frame(typ uint8, tag uint16, body []byte) []byte {
	var e enc
	e.u32(uint32(7 + len(body)))
	e.u8(typ)
	e.u16(tag)
	e.b = append(e.b, body...)
	return e.b
}

func TestHostileServer(t *testing.T) {
	qid := func(e *enc) { e.u8(0); e.u32(0); e.u64(1) }
	for _, tc := range []struct {
		name  string
		reply func(typ uint8, tag uint16) []byte
	}{
		{"oversized frame", func(typ uint8, tag uint16) []byte {
			var e enc
			e.u32(64 << 20)
			e.u8(typ + 1)
			e.u16(tag)
			return e.b
		}},
		{"tiny frame", func(typ uint8, tag uint16) []byte {
			return []byte{3, 0, 0, 0, typ + 1, byte(tag), byte(tag >> 8)}
		}},
		{"wrong reply type", func(typ uint8, tag uint16) []byte {
			var e enc
			qid(&e)
			return frame(tTmkdir+1, tag, e.b)
		}},
		{"unknown tag", func(typ uint8, tag uint16) []byte {
			return frame(typ+1, tag+100, nil)
		}},
		{"truncated body", func(typ uint8, tag uint16) []byte {
			return frame(typ+1, tag, []byte{1, 2})
		}},
		{"trailing garbage", func(typ uint8, tag uint16) []byte {
			var e enc
			e.u16(1)
			qid(&e)
			e.u32(0xdeadbeef)
			return frame(typ+1, tag, e.b)
		}},
		{"too many qids", func(typ uint8, tag uint16) []byte {
			var e enc
			e.u16(3)
			qid(&e)
			qid(&e)
			qid(&e)
			return frame(typ+1, tag, e.b)
		}},
		{"bad rlerror", func(typ uint8, tag uint16) []byte {
			return frame(tRlerror, tag, []byte{1, 2, 3, 4, 5, 6})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := fakeServer(t, func(typ uint8, tag uint16, _ []byte) []byte { return tc.reply(typ, tag) })
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, _, err := c.Walk(ctx, 1, []string{"x"})
			if !errors.Is(err, syscall.EIO) {
				t.Fatalf("walk = %v, want EIO", err)
			}
			select {
			case <-c.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("connection not declared broken")
			}
			if _, _, err := c.Walk(ctx, 1, nil); !errors.Is(err, syscall.EIO) {
				t.Errorf("after break: %v", err)
			}
		})
	}
}

func TestHostileReads(t *testing.T) {
	// An Rread longer than asked, and a readdir entry named "../x".
	t.Run("long read", func(t *testing.T) {
		c, _ := fakeServer(t, func(typ uint8, tag uint16, body []byte) []byte {
			var e enc
			e.u32(100)
			e.b = append(e.b, make([]byte, 100)...)
			return frame(typ+1, tag, e.b)
		})
		_, err := c.Read(context.Background(), 1, 0, make([]byte, 10))
		if !errors.Is(err, syscall.EIO) {
			t.Fatalf("read = %v", err)
		}
	})
	t.Run("bad dirent name", func(t *testing.T) {
		c, _ := fakeServer(t, func(typ uint8, tag uint16, body []byte) []byte {
			var ents enc
			ents.u8(0)
			ents.u32(0)
			ents.u64(5)
			ents.u64(1)
			ents.u8(0)
			ents.str("../x")
			var e enc
			e.u32(uint32(len(ents.b)))
			e.b = append(e.b, ents.b...)
			return frame(typ+1, tag, e.b)
		})
		_, err := c.Readdir(context.Background(), 1, 0, 4096)
		if !errors.Is(err, syscall.EIO) {
			t.Fatalf("readdir = %v", err)
		}
	})
	t.Run("errno", func(t *testing.T) {
		c, _ := fakeServer(t, func(typ uint8, tag uint16, body []byte) []byte {
			var e enc
			e.u32(uint32(syscall.EACCES))
			return frame(tRlerror, tag, e.b)
		})
		_, _, err := c.Walk(context.Background(), 1, []string{"a"})
		if !errors.Is(err, syscall.EACCES) {
			t.Fatalf("walk = %v", err)
		}
		if c.Err() != nil {
			t.Errorf("errno broke the connection: %v", c.Err())
		}
	})
}

func TestCancelFlushes(t *testing.T) {
	// The server holds the first request until it sees the Tflush, then
	// answers the flush; the client must return at once and keep working.
	var mu sync.Mutex
	var held []uint16
	c, _ := fakeServer(t, func(typ uint8, tag uint16, body []byte) []byte {
		mu.Lock()
		defer mu.Unlock()
		switch typ {
		case tTwalk:
			if len(held) == 0 {
				held = append(held, tag)
				return nil
			}
			var e enc
			e.u16(0)
			return frame(typ+1, tag, e.b)
		case tTflush:
			return frame(tTflush+1, tag, nil)
		case tTclunk:
			return frame(tTclunk+1, tag, nil)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, _, err := c.Walk(ctx, 1, nil)
	if !errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("walk = %v, want ETIMEDOUT", err)
	}
	// The connection still works.
	deadline := time.Now().Add(5 * time.Second)
	for c.Stats().ByType["Tflush"] == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if _, _, err := c.Walk(context.Background(), 1, nil); err != nil {
		t.Fatalf("walk after flush: %v", err)
	}
	if c.Stats().ByType["Tflush"] != 1 {
		t.Errorf("stats = %v", c.Stats())
	}
}

// abandonedWalk starts a walk that times out (the fake server holds it),
// then waits until cond (checked under mu) holds.
func abandonedWalk(t *testing.T, c *Client, mu *sync.Mutex, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, _, err := c.Walk(ctx, 1, nil); !errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("walk = %v, want ETIMEDOUT", err)
	}
	waitUntil(mu, cond)
}

// waitUntil polls cond under mu for up to 5 seconds.
func waitUntil(mu *sync.Mutex, cond func() bool) {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		ok := cond()
		mu.Unlock()
		if ok {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestFlushedWalkKeepsFid: the p9 library's server answers a Tflush at
// once when the request it names was read but not yet started, then
// runs the request and answers it. A walk flushed that way may still
// create its fid after Rflush, so the client must not clunk or reuse
// the fid number until the walk's own reply came.
func TestFlushedWalkKeepsFid(t *testing.T) {
	var mu sync.Mutex
	var (
		heldTag     uint16
		heldFid     uint32
		held        bool
		lateSent    bool
		events      []string
		walkNewfids []uint32
	)
	c, _ := fakeServer(t, func(typ uint8, tag uint16, body []byte) []byte {
		mu.Lock()
		defer mu.Unlock()
		var out []byte
		if held && !lateSent && typ != tTflush {
			// The held walk completes now, after its Rflush: it made
			// its fid.
			var e enc
			e.u16(0)
			out = append(out, frame(tTwalk+1, heldTag, e.b)...)
			lateSent = true
			events = append(events, "late Rwalk")
		}
		switch typ {
		case tTwalk:
			newfid := binary.LittleEndian.Uint32(body[4:])
			walkNewfids = append(walkNewfids, newfid)
			if !held {
				held, heldTag, heldFid = true, tag, newfid
				return out
			}
			var e enc
			e.u16(0)
			return append(out, frame(typ+1, tag, e.b)...)
		case tTflush:
			events = append(events, "Rflush")
			return append(out, frame(tTflush+1, tag, nil)...)
		case tTclunk:
			fid := binary.LittleEndian.Uint32(body)
			if held && fid == heldFid {
				events = append(events, "Tclunk of the flushed walk's fid")
			}
			return append(out, frame(tTclunk+1, tag, nil)...)
		}
		return out
	})
	abandonedWalk(t, c, &mu, func() bool { return len(events) > 0 })
	time.Sleep(100 * time.Millisecond) // a wrong client clunks now
	// A new walk (its request makes the server send the late reply).
	nf, _, err := c.Walk(context.Background(), 1, nil)
	if err != nil {
		t.Fatalf("walk after flush: %v", err)
	}
	waitUntil(&mu, func() bool { return len(events) >= 3 })
	mu.Lock()
	defer mu.Unlock()
	want := []string{"Rflush", "late Rwalk", "Tclunk of the flushed walk's fid"}
	if !slices.Equal(events, want) {
		t.Errorf("events = %q, want %q", events, want)
	}
	if uint32(nf) == heldFid {
		t.Errorf("the flushed walk's fid %d was reused before its reply", nf)
	}
	t.Logf("walk newfids: %v", walkNewfids)
}

// TestFlushKeepsTag: a request answered while the Tflush naming it is in
// flight keeps its tag reserved until the Rflush, so no new request (and
// no Tflush, which the p9 server would make wait for itself) reuses the
// tag the Tflush names.
func TestFlushKeepsTag(t *testing.T) {
	var mu sync.Mutex
	var (
		heldTag   uint16
		held      bool
		flushTag  uint16
		flushSeen bool
		answered  bool
		reuse     []string
	)
	c, _ := fakeServer(t, func(typ uint8, tag uint16, body []byte) []byte {
		mu.Lock()
		defer mu.Unlock()
		var e enc
		e.u16(0)
		switch typ {
		case tTwalk:
			if !held {
				held, heldTag = true, tag
				return nil
			}
			out := frame(typ+1, tag, e.b)
			if flushSeen && !answered && tag == heldTag {
				reuse = append(reuse, "a walk took the tag the pending Tflush names")
			}
			if flushSeen && !answered {
				// Answer the flush after this walk.
				answered = true
				out = append(out, frame(tTflush+1, flushTag, nil)...)
			}
			return out
		case tTflush:
			old := binary.LittleEndian.Uint16(body)
			if old == tag {
				reuse = append(reuse, "a Tflush names its own tag")
			}
			// Answer the held walk now, the flush only later.
			flushSeen, flushTag = true, tag
			return frame(tTwalk+1, heldTag, e.b)
		case tTclunk:
			return frame(tTclunk+1, tag, nil)
		}
		return nil
	})
	abandonedWalk(t, c, &mu, func() bool { return flushSeen })
	time.Sleep(50 * time.Millisecond) // the held walk's reply is processed
	for i := 0; i < 3; i++ {
		wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _, err := c.Walk(wctx, 1, nil)
		wcancel()
		if err != nil {
			t.Fatalf("walk %d after flush: %v", i, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !flushSeen {
		t.Fatal("no Tflush was sent")
	}
	if len(reuse) > 0 {
		t.Errorf("tag reused: %q", reuse)
	}
}
