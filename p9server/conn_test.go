package p9server

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"syscall"
	"testing"
)

// recordConn records every Write call and serves reads from a buffer.
type recordConn struct {
	mu     sync.Mutex
	writes [][]byte
	in     *bytes.Reader
	closed int
}

func (r *recordConn) Read(p []byte) (int, error) { return r.in.Read(p) }

func (r *recordConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, append([]byte(nil), p...))
	return len(p), nil
}

func (r *recordConn) Close() error { r.closed++; return nil }

// frame builds a 9P message of the given type with fixed and payload
// parts, returned as the pieces the 9P library writes separately.
func frame(typ uint8, fixed, payload []byte) [][]byte {
	hdr := make([]byte, 7)
	binary.LittleEndian.PutUint32(hdr, uint32(7+len(fixed)+len(payload)))
	hdr[4] = typ
	parts := [][]byte{hdr}
	if len(fixed) > 0 {
		parts = append(parts, fixed)
	}
	if len(payload) > 0 {
		parts = append(parts, payload)
	}
	return parts
}

func TestFrameConnIsNotSyscallConn(t *testing.T) {
	var c any = newFrameConn(&recordConn{in: bytes.NewReader(nil)}, DefaultMessageSize, &counters{})
	if _, ok := c.(syscall.Conn); ok {
		t.Fatal("frameConn implements syscall.Conn; the 9P library would call recvmsg on it")
	}
}

// TestFrameConnCoalescesWrites checks the write calls that reach the
// connection for replies written in pieces, as the 9P library does.
func TestFrameConnCoalescesWrites(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), (1<<20)/16)
	mid := bytes.Repeat([]byte{7}, 40000)
	cases := []struct {
		name   string
		pieces [][]byte // each written with one Write call
		want   []int    // sizes of the writes that reach the connection
	}{
		{"header only", frame(121, nil, nil), []int{7}},
		{"small reply", frame(7, []byte{2, 0, 0, 0}, nil), []int{11}},
		{"walk reply", frame(111, make([]byte, 2+13*3), nil), []int{7 + 41}},
		{"read reply 1 MiB", frame(117, []byte{0, 0, 16, 0}, big), []int{writeChunk, 7 + 4 + len(big) - writeChunk}},
		{"read reply 40000", frame(117, []byte{0x40, 0x9c, 0, 0}, mid), []int{writeChunk, 7 + 4 + len(mid) - writeChunk}},
		{"read reply exactly one chunk", frame(117, make([]byte, 4), make([]byte, writeChunk-11)), []int{writeChunk}},
		{"two replies in one write", [][]byte{bytes.Join(append(frame(7, []byte{1, 0, 0, 0}, nil), frame(121, nil, nil)...), nil)}, []int{11, 7}},
		{"byte by byte", splitBytes(bytes.Join(frame(7, []byte{2, 0, 0, 0}, nil), nil)), []int{11}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rc := &recordConn{in: bytes.NewReader(nil)}
			var st counters
			c := newFrameConn(rc, DefaultMessageSize, &st)
			var want []byte
			for _, p := range tc.pieces {
				n, err := c.Write(p)
				if err != nil || n != len(p) {
					t.Fatalf("Write(%d bytes) = %d, %v", len(p), n, err)
				}
				want = append(want, p...)
			}
			var sizes []int
			for _, w := range rc.writes {
				sizes = append(sizes, len(w))
			}
			if !equalInts(sizes, tc.want) {
				t.Errorf("write sizes %v, want %v", sizes, tc.want)
			}
			if got := bytes.Join(rc.writes, nil); !bytes.Equal(got, want) {
				t.Errorf("bytes on the wire differ from bytes written (%d vs %d)", len(got), len(want))
			}
			if st.bytesOut.Load() != uint64(len(want)) {
				t.Errorf("bytesOut %d, want %d", st.bytesOut.Load(), len(want))
			}
		})
	}
}

func splitBytes(b []byte) [][]byte {
	var out [][]byte
	for i := range b {
		out = append(out, b[i:i+1])
	}
	return out
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

type errConn struct{ recordConn }

func (e *errConn) Write(p []byte) (int, error) { return 0, errors.New("broken") }

func TestFrameConnWriteError(t *testing.T) {
	c := newFrameConn(&errConn{recordConn{in: bytes.NewReader(nil)}}, DefaultMessageSize, &counters{})
	if _, err := c.Write(bytes.Join(frame(121, nil, nil), nil)); err == nil {
		t.Fatal("write error not returned")
	}
	if _, err := c.Write([]byte{1}); err == nil {
		t.Fatal("write after error succeeded")
	}
}

// TestFrameConnReads checks the read side: frames are returned intact and
// one at a time, Tversion's msize is capped, and messages are counted.
func TestFrameConnReads(t *testing.T) {
	version := func(msize uint32) []byte {
		body := binary.LittleEndian.AppendUint32(nil, msize)
		body = binary.LittleEndian.AppendUint16(body, 8)
		body = append(body, "9P2000.L"...)
		return bytes.Join(frame(100, body, nil), nil)
	}
	walk := bytes.Join(frame(110, []byte{1, 0, 0, 0, 2, 0, 0, 0, 0, 0}, nil), nil)
	write := bytes.Join(frame(118, make([]byte, 16), bytes.Repeat([]byte{9}, 300000)), nil)
	clunk := bytes.Join(frame(120, []byte{1, 0, 0, 0}, nil), nil)

	var stream []byte
	for _, m := range [][]byte{version(8 << 20), walk, write, walk, clunk, version(65536)} {
		stream = append(stream, m...)
	}
	for _, bufSize := range []int{1, 7, 100, 4096, 1 << 20} {
		var st counters
		rc := &recordConn{in: bytes.NewReader(stream)}
		c := newFrameConn(rc, 1<<20, &st)
		var got []byte
		buf := make([]byte, bufSize)
		frameEnds := map[int]bool{}
		off := 0
		for _, m := range [][]byte{version(0), walk, write, walk, clunk, version(0)} {
			off += len(m)
			frameEnds[off] = true
		}
		for {
			n, err := c.Read(buf)
			// A read never crosses a frame end.
			for i := len(got) + 1; i < len(got)+n; i++ {
				if frameEnds[i] {
					t.Fatalf("buffer %d: a read spans the frame end at %d", bufSize, i)
				}
			}
			got = append(got, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
		}
		want := bytes.Clone(stream)
		binary.LittleEndian.PutUint32(want[7:], 1<<20) // capped
		if !bytes.Equal(got, want) {
			t.Fatalf("buffer %d: stream differs (got %d bytes, want %d)", bufSize, len(got), len(want))
		}
		for typ, n := range map[uint8]uint64{100: 2, 110: 2, 118: 1, 120: 1} {
			if g := st.byType[typ].Load(); g != n {
				t.Errorf("buffer %d: %s counted %d, want %d", bufSize, MessageName(typ), g, n)
			}
		}
		if st.bytesIn.Load() != uint64(len(stream)) {
			t.Errorf("bytesIn %d, want %d", st.bytesIn.Load(), len(stream))
		}
	}
}

func TestFrameConnCloseOnce(t *testing.T) {
	rc := &recordConn{in: bytes.NewReader(nil)}
	c := newFrameConn(rc, DefaultMessageSize, &counters{})
	c.Close()
	c.Close()
	if rc.closed != 1 {
		t.Fatalf("closed %d times", rc.closed)
	}
}

func TestMessageName(t *testing.T) {
	for typ, want := range map[uint8]string{110: "Twalk", 126: "Twalkgetattr", 30: "Txattrwalk", 7: "Rlerror", 200: "T?200", 201: "R?201"} {
		if got := MessageName(typ); got != want {
			t.Errorf("MessageName(%d) = %q, want %q", typ, got, want)
		}
	}
}
