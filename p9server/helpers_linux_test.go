//go:build linux

package p9server

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// socketPair returns two connected stream sockets.
func socketPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), fmt.Sprintf("socketpair-%d", i))
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatalf("FileConn: %v", err)
		}
		conns[i] = c
	}
	return conns[0], conns[1]
}

// serve starts srv on one end of a socket pair and returns the other end.
// The server is stopped (and checked to return cleanly) at cleanup.
func serve(t testing.TB, srv *Server) net.Conn {
	t.Helper()
	cc, sc := socketPair(t)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background(), sc) }()
	t.Cleanup(func() {
		cc.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return cc
}

// newServer makes a server for dir, closed at cleanup.
func newServer(t testing.TB, dir string, opts ...Option) *Server {
	t.Helper()
	srv, err := New(dir, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// connect serves dir and returns the library's client and its attached
// root.
func connect(t testing.TB, dir string, opts ...Option) (*Server, *p9.Client, p9.File) {
	t.Helper()
	srv := newServer(t, dir, opts...)
	cl, root := attach(t, srv)
	return srv, cl, root
}

func attach(t testing.TB, srv *Server) (*p9.Client, p9.File) {
	t.Helper()
	cl, err := p9.NewClient(serve(t, srv), p9.WithMessageSize(DefaultMessageSize))
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	root, err := cl.Attach("/")
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	return cl, root
}

// walk walks one name at a time from dir (the library's client sends the
// whole path in one Twalk, which the server library splits).
func walk(t testing.TB, dir p9.File, path string) p9.File {
	t.Helper()
	f, err := tryWalk(dir, path)
	if err != nil {
		t.Fatalf("walk %q: %v", path, err)
	}
	return f
}

func tryWalk(dir p9.File, path string) (p9.File, error) {
	var names []string
	if path != "" {
		names = strings.Split(path, "/")
	}
	_, f, err := dir.Walk(names)
	return f, err
}

// errnoOf returns the errno number of err (0 for nil, -1 if none).
func errnoOf(err error) int {
	if err == nil {
		return 0
	}
	var le linux.Errno
	if errors.As(err, &le) {
		return int(le)
	}
	var ue unix.Errno
	if errors.As(err, &ue) {
		return int(ue)
	}
	return -1
}

func errName(n int) string {
	switch n {
	case 0:
		return "ok"
	case -1:
		return "non-errno error"
	}
	return unix.ErrnoName(unix.Errno(n))
}

// snapshot describes a tree: every entry's type, permissions, owner,
// size, link target and content, plus its xattrs (user. namespace).
func snapshot(t testing.TB, dir string) string {
	t.Helper()
	var lines []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		line := fmt.Sprintf("%s mode=%o uid=%d gid=%d nlink=%d", rel, st.Mode, st.Uid, st.Gid, st.Nlink)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" size=%d data=%q", st.Size, b)
		case unix.S_IFLNK:
			target, _ := os.Readlink(p)
			line += " -> " + target
		case unix.S_IFCHR, unix.S_IFBLK:
			line += fmt.Sprintf(" rdev=%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
		if rel != "." && st.Mode&unix.S_IFMT != unix.S_IFLNK {
			buf := make([]byte, 4096)
			n, _ := unix.Llistxattr(p, buf)
			var names []string
			for _, x := range strings.Split(string(buf[:n]), "\x00") {
				if strings.HasPrefix(x, "user.") {
					v := make([]byte, 4096)
					m, _ := unix.Lgetxattr(p, x, v)
					names = append(names, x+"="+string(v[:max(m, 0)]))
				}
			}
			sort.Strings(names)
			if len(names) > 0 {
				line += " xattrs=" + strings.Join(names, ",")
			}
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", dir, err)
	}
	return strings.Join(lines, "\n")
}

// rawClient speaks 9P2000.L by hand, for what the library's client lacks
// (xattrs) and for checking the wire itself. One request at a time.
type rawClient struct {
	t     testing.TB
	conn  net.Conn
	mu    sync.Mutex
	msize uint32
}

func newRawClient(t testing.TB, srv *Server, msize uint32) *rawClient {
	t.Helper()
	rc := &rawClient{t: t, conn: serve(t, srv)}
	var b wbuf
	b.u32(msize)
	b.str("9P2000.L")
	typ, r := rc.rpc(100, b.b)
	if typ != 101 {
		t.Fatalf("Tversion: got message type %d", typ)
	}
	rc.msize = r.u32()
	if v := r.str(); v != "9P2000.L" {
		t.Fatalf("Tversion: version %q", v)
	}
	return rc
}

type wbuf struct{ b []byte }

func (w *wbuf) u8(v uint8)   { w.b = append(w.b, v) }
func (w *wbuf) u16(v uint16) { w.b = binary.LittleEndian.AppendUint16(w.b, v) }
func (w *wbuf) u32(v uint32) { w.b = binary.LittleEndian.AppendUint32(w.b, v) }
func (w *wbuf) u64(v uint64) { w.b = binary.LittleEndian.AppendUint64(w.b, v) }
func (w *wbuf) str(s string) { w.u16(uint16(len(s))); w.b = append(w.b, s...) }

type rbuf struct{ b []byte }

func (r *rbuf) take(n int) []byte {
	if len(r.b) < n {
		panic(fmt.Sprintf("short reply: need %d, have %d", n, len(r.b)))
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}
func (r *rbuf) u8() uint8   { return r.take(1)[0] }
func (r *rbuf) u16() uint16 { return binary.LittleEndian.Uint16(r.take(2)) }
func (r *rbuf) u32() uint32 { return binary.LittleEndian.Uint32(r.take(4)) }
func (r *rbuf) u64() uint64 { return binary.LittleEndian.Uint64(r.take(8)) }
func (r *rbuf) str() string { return string(r.take(int(r.u16()))) }

// rpc sends one message and returns the reply's type and body.
func (rc *rawClient) rpc(typ uint8, body []byte) (uint8, *rbuf) {
	rc.t.Helper()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	msg := binary.LittleEndian.AppendUint32(nil, uint32(7+len(body)))
	msg = append(msg, typ, 1, 0)
	msg = append(msg, body...)
	if _, err := rc.conn.Write(msg); err != nil {
		rc.t.Fatalf("raw write: %v", err)
	}
	var hdr [7]byte
	if _, err := io.ReadFull(rc.conn, hdr[:]); err != nil {
		rc.t.Fatalf("raw read: %v", err)
	}
	size := binary.LittleEndian.Uint32(hdr[:])
	rb := make([]byte, size-7)
	if _, err := io.ReadFull(rc.conn, rb); err != nil {
		rc.t.Fatalf("raw read body: %v", err)
	}
	return hdr[4], &rbuf{rb}
}

// call is rpc for requests that may fail: it returns the Rlerror errno.
func (rc *rawClient) call(typ uint8, body []byte) (*rbuf, error) {
	rc.t.Helper()
	rt, r := rc.rpc(typ, body)
	if rt == 7 {
		return nil, linux.Errno(r.u32())
	}
	if rt != typ+1 {
		rc.t.Fatalf("request %d: reply type %d", typ, rt)
	}
	return r, nil
}

func (rc *rawClient) attach(fid uint32) {
	var b wbuf
	b.u32(fid)
	b.u32(^uint32(0))
	b.str("root")
	b.str("")
	b.u32(^uint32(0))
	if _, err := rc.call(104, b.b); err != nil {
		rc.t.Fatalf("Tattach: %v", err)
	}
}

func (rc *rawClient) walk(fid, newFid uint32, names ...string) error {
	var b wbuf
	b.u32(fid)
	b.u32(newFid)
	b.u16(uint16(len(names)))
	for _, n := range names {
		b.str(n)
	}
	_, err := rc.call(110, b.b)
	return err
}

func (rc *rawClient) clunk(fid uint32) error {
	var b wbuf
	b.u32(fid)
	_, err := rc.call(120, b.b)
	return err
}

func (rc *rawClient) lopen(fid, flags uint32) error {
	var b wbuf
	b.u32(fid)
	b.u32(flags)
	_, err := rc.call(12, b.b)
	return err
}

// readAll reads fid from offset 0 to the end in requests of chunk bytes.
func (rc *rawClient) readAll(fid uint32, size uint64, chunk uint32) ([]byte, error) {
	var out []byte
	for off := uint64(0); off < size; {
		n := uint64(chunk)
		if size-off < n {
			n = size - off
		}
		var b wbuf
		b.u32(fid)
		b.u64(off)
		b.u32(uint32(n))
		r, err := rc.call(116, b.b)
		if err != nil {
			return nil, err
		}
		cnt := r.u32()
		if cnt == 0 {
			break
		}
		out = append(out, r.take(int(cnt))...)
		off += uint64(cnt)
	}
	return out, nil
}

// xattrWalk does Txattrwalk fid -> newFid and returns the size.
func (rc *rawClient) xattrWalk(fid, newFid uint32, name string) (uint64, error) {
	var b wbuf
	b.u32(fid)
	b.u32(newFid)
	b.str(name)
	r, err := rc.call(30, b.b)
	if err != nil {
		return 0, err
	}
	return r.u64(), nil
}

// getXattr reads xattr name (or the list, for "") of fid through a
// temporary fid.
func (rc *rawClient) getXattr(fid uint32, name string) ([]byte, error) {
	const tmp = 999
	size, err := rc.xattrWalk(fid, tmp, name)
	if err != nil {
		return nil, err
	}
	defer rc.clunk(tmp)
	return rc.readAll(tmp, size, 64<<10)
}

// setXattr sets xattr name of fid (Txattrcreate on a clone, Twrite, Tclunk).
func (rc *rawClient) setXattr(fid uint32, name string, value []byte, flags uint32) error {
	const tmp = 998
	if err := rc.walk(fid, tmp); err != nil {
		return err
	}
	var b wbuf
	b.u32(tmp)
	b.str(name)
	b.u64(uint64(len(value)))
	b.u32(flags)
	if _, err := rc.call(32, b.b); err != nil {
		rc.clunk(tmp)
		return err
	}
	if len(value) > 0 {
		var w wbuf
		w.u32(tmp)
		w.u64(0)
		w.u32(uint32(len(value)))
		w.b = append(w.b, value...)
		if _, err := rc.call(118, w.b); err != nil {
			rc.clunk(tmp)
			return err
		}
	}
	return rc.clunk(tmp)
}
