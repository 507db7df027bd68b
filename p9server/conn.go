package p9server

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"sync"
)

const (
	// readBufferSize is the buffered reader in front of the connection.
	readBufferSize = 256 << 10
	// writeChunk is the most bytes coalesced into one write. A virtio
	// console port accepts at most 32 KiB per write(2) anyway.
	writeChunk = 32 << 10
	// headerLen is a 9P message header: size[4] type[1] tag[2].
	headerLen = 7
	// msgTversion is the Tversion message type.
	msgTversion = 100
)

// frameConn is the transport under the 9P library. It is a plain
// io.ReadWriteCloser on purpose: it does not implement syscall.Conn, so the
// library never calls recvmsg on it (which fails on a virtio port, an
// *os.File). It
//
//   - reads through a large buffered reader, one 9P frame at a time,
//     counting each incoming message by type and capping the msize of a
//     Tversion at the server's limit (the library would grant up to 4 MiB);
//   - coalesces the pieces of each outgoing reply (the library writes
//     header, fixed part and payload separately) into writes of up to
//     writeChunk bytes, and flushes at the end of every reply, which it
//     finds by tracking the 9P size header of the bytes written.
//
// Reads are serialised by the library (one receiver at a time) and so are
// writes (one sender at a time); both sides also lock for safety.
type frameConn struct {
	conn  io.ReadWriteCloser
	msize uint32
	stats *counters

	rmu     sync.Mutex
	br      *bufio.Reader
	hdr     [headerLen + 4]byte
	pending []byte // header bytes (possibly rewritten) not yet returned
	left    uint32 // body bytes of the current frame not yet returned

	wmu     sync.Mutex
	wbuf    []byte // coalesced bytes not yet written
	wsize   [4]byte
	wsizeN  int    // bytes of the current frame's size field seen
	wremain uint32 // bytes of the current frame still to come
	werr    error

	closeOnce sync.Once
	closeErr  error
}

func newFrameConn(conn io.ReadWriteCloser, msize uint32, stats *counters) *frameConn {
	return &frameConn{
		conn:  conn,
		msize: msize,
		stats: stats,
		br:    bufio.NewReaderSize(conn, readBufferSize),
		wbuf:  make([]byte, 0, writeChunk),
	}
}

// Read implements io.Reader. It never returns bytes of two frames at once.
func (c *frameConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if len(c.pending) == 0 && c.left == 0 {
		if err := c.nextFrame(); err != nil {
			return 0, err
		}
	}
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	if uint32(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.br.Read(p)
	c.left -= uint32(n)
	c.stats.bytesIn.Add(uint64(n))
	return n, err
}

// nextFrame reads the header of the next frame into pending.
func (c *frameConn) nextFrame() error {
	if _, err := io.ReadFull(c.br, c.hdr[:headerLen]); err != nil {
		return err // io.EOF at a frame boundary is a clean end
	}
	size := binary.LittleEndian.Uint32(c.hdr[:4])
	typ := c.hdr[4]
	c.stats.byType[typ].Add(1)
	n := headerLen
	if typ == msgTversion && size >= headerLen+4 {
		if _, err := io.ReadFull(c.br, c.hdr[headerLen:headerLen+4]); err != nil {
			return err
		}
		if m := binary.LittleEndian.Uint32(c.hdr[headerLen:]); m > c.msize {
			binary.LittleEndian.PutUint32(c.hdr[headerLen:], c.msize)
		}
		n += 4
	}
	c.pending = c.hdr[:n]
	c.left = 0
	if size > uint32(n) {
		c.left = size - uint32(n)
	}
	c.stats.bytesIn.Add(uint64(n))
	return nil
}

// Write implements io.Writer. Bytes are held back until the reply they
// belong to is complete or writeChunk bytes are pending; a large payload
// goes straight to the connection once the chunk before it is full.
func (c *frameConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
	total := len(p)
	for len(p) > 0 {
		if c.wremain == 0 {
			// At a frame start: learn its size from the first 4 bytes.
			k := copy(c.wsize[c.wsizeN:], p)
			c.wsizeN += k
			c.wbuf = append(c.wbuf, p[:k]...)
			p = p[k:]
			if c.wsizeN < 4 {
				continue
			}
			c.wsizeN = 0
			size := binary.LittleEndian.Uint32(c.wsize[:])
			if size < 4 {
				size = 4 // malformed; never produced by the library
			}
			c.wremain = size - 4
			if c.wremain == 0 {
				if err := c.flushLocked(); err != nil {
					return 0, err
				}
			}
			continue
		}
		// Inside a frame: take at most the rest of this frame.
		part := p
		if uint32(len(part)) > c.wremain {
			part = part[:c.wremain]
		}
		if space := writeChunk - len(c.wbuf); len(part) > space {
			// Fill the chunk and send it, then send what remains
			// directly if it is a chunk or more, else buffer it.
			c.wbuf = append(c.wbuf, part[:space]...)
			if err := c.flushLocked(); err != nil {
				return 0, err
			}
			rest := part[space:]
			if len(rest) >= writeChunk {
				if err := c.writeAll(rest); err != nil {
					return 0, err
				}
			} else {
				c.wbuf = append(c.wbuf, rest...)
			}
		} else {
			c.wbuf = append(c.wbuf, part...)
		}
		c.wremain -= uint32(len(part))
		p = p[len(part):]
		if c.wremain == 0 {
			if err := c.flushLocked(); err != nil {
				return 0, err
			}
		}
	}
	return total, nil
}

func (c *frameConn) flushLocked() error {
	if len(c.wbuf) == 0 {
		return nil
	}
	err := c.writeAll(c.wbuf)
	c.wbuf = c.wbuf[:0]
	return err
}

func (c *frameConn) writeAll(b []byte) error {
	for len(b) > 0 {
		n, err := c.conn.Write(b)
		c.stats.bytesOut.Add(uint64(n))
		b = b[n:]
		if err != nil {
			c.werr = err
			return err
		}
		if n == 0 {
			c.werr = io.ErrShortWrite
			return c.werr
		}
	}
	return nil
}

// Close closes the connection once; later calls return the first result.
func (c *frameConn) Close() error {
	c.closeOnce.Do(func() {
		c.closeErr = c.conn.Close()
		if errors.Is(c.closeErr, io.ErrClosedPipe) {
			c.closeErr = nil
		}
	})
	return c.closeErr
}
