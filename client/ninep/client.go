package ninep

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Fid is a 9P file identifier on one connection.
type Fid uint32

// DefaultMsize is the message size asked for: 1 MiB of payload plus room
// for the largest I/O header.
const DefaultMsize = 1<<20 + 4096

// minMsize is the smallest message size accepted from a server.
const minMsize = 8192

// ErrBroken is returned (wrapped in EIO) once the connection has been
// declared broken by a protocol violation or an I/O error.
var ErrBroken = errors.New("ninep: connection broken")

// Option configures a Client.
type Option func(*options)

type options struct {
	msize       uint32
	logger      *slog.Logger
	maxInflight int
	version     uint32
}

// WithMsize sets the message size to negotiate (default DefaultMsize).
func WithMsize(n uint32) Option { return func(o *options) { o.msize = n } }

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithMaxInflight bounds the requests in flight at once (default 1024).
func WithMaxInflight(n int) Option { return func(o *options) { o.maxInflight = n } }

// WithVersion sets the highest 9P2000.L.Google.N extension version to ask
// for (default 7; 0 asks for plain 9P2000.L).
func WithVersion(v uint32) Option { return func(o *options) { o.version = v } }

// Client is a 9P2000.L client on one connection. All methods are safe for
// concurrent use; many requests may be in flight at once. Every request
// method takes a context: when it is cancelled the request is flushed
// (Tflush) and the method returns EINTR (ETIMEDOUT for a deadline).
type Client struct {
	rwc     io.ReadWriteCloser
	log     *slog.Logger
	msize   uint32 // negotiated
	version uint32 // Google extension version

	wmu sync.Mutex // serializes writes: one frame per Write call

	mu      sync.Mutex
	pending map[uint16]*call
	freeTag []uint16
	broken  error
	closed  chan struct{}

	inflight chan struct{}

	fidMu   sync.Mutex
	nextFid Fid
	freeFid []Fid

	sent [256]atomic.Uint64
}

// call is one request waiting for its reply.
type call struct {
	tag   uint16
	rtype uint8 // expected reply type
	done  chan struct{}

	// Results, valid once done is closed.
	body  []byte
	errno syscall.Errno
	err   error // connection error

	// dest receives an Rread payload directly; n is its length.
	dest []byte
	n    int

	// abandoned is set (under Client.mu) when the caller gave up;
	// onAbandon then runs when the tag is finally answered or flushed.
	abandoned bool
	onAbandon func(errno syscall.Errno, err error)
	// cleaned: onAbandon has run (it runs at most once).
	cleaned bool
	// flushing: a Tflush naming this call's tag is in flight; tagKept:
	// its reply came meanwhile and the tag is freed after the Rflush.
	flushing, tagKept bool
	// flushed: a Tflush for this call was answered; a late reply is
	// still accepted (the tag stays reserved until it comes).
	flushed bool
	// destBusy: the reader is filling dest (under Client.mu).
	destBusy bool
}

// New negotiates the protocol version on rwc and starts the reader. The
// client owns rwc and closes it on Close or when the connection breaks.
func New(ctx context.Context, rwc io.ReadWriteCloser, opts ...Option) (*Client, error) {
	o := options{msize: DefaultMsize, logger: slog.New(slog.DiscardHandler), maxInflight: 1024, version: 7}
	for _, fn := range opts {
		fn(&o)
	}
	if o.msize < minMsize {
		o.msize = minMsize
	}
	if o.maxInflight < 1 {
		o.maxInflight = 1
	}
	c := &Client{
		rwc:      rwc,
		log:      o.logger,
		msize:    o.msize,
		pending:  make(map[uint16]*call),
		closed:   make(chan struct{}),
		inflight: make(chan struct{}, o.maxInflight),
		nextFid:  1,
	}
	c.freeTag = make([]uint16, 0, noTag)
	for t := noTag - 1; t >= 0; t-- {
		c.freeTag = append(c.freeTag, uint16(t))
	}
	go c.readLoop()

	want := "9P2000.L"
	if o.version > 0 {
		want = "9P2000.L.Google." + strconv.FormatUint(uint64(o.version), 10)
	}
	var e enc
	e.u32(o.msize)
	e.str(want)
	body, err := c.rpcTag(ctx, noTag, tTversion, e.b)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("negotiating version: %w", err)
	}
	d := dec{b: body}
	msize := d.u32()
	ver := d.str()
	if !d.done() {
		c.fail("garbled Rversion")
		return nil, fmt.Errorf("negotiating version: %w", syscall.EIO)
	}
	v, ok := parseVersion(ver)
	if !ok || v > o.version || msize < minMsize || msize > o.msize {
		c.Close()
		return nil, fmt.Errorf("negotiating version: server answered %q with msize %d: %w", ver, msize, syscall.EPROTONOSUPPORT)
	}
	c.mu.Lock()
	c.msize = msize
	c.version = v
	c.mu.Unlock()
	return c, nil
}

func parseVersion(s string) (uint32, bool) {
	if s == "9P2000.L" {
		return 0, true
	}
	rest, ok := strings.CutPrefix(s, "9P2000.L.Google.")
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseUint(rest, 10, 32)
	return uint32(v), err == nil
}

// Msize is the negotiated message size.
func (c *Client) Msize() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.msize
}

// Version is the negotiated 9P2000.L.Google extension version (0 for
// plain 9P2000.L).
func (c *Client) Version() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.version
}

// MaxIO is the largest payload of one Tread or Twrite.
func (c *Client) MaxIO() int { return int(c.Msize()) - ioHeader }

// Stats counts the requests sent, by type name ("Twalk", ...).
type Stats struct {
	Total  uint64
	ByType map[string]uint64
}

// Stats returns the number of requests sent so far.
func (c *Client) Stats() Stats {
	s := Stats{ByType: make(map[string]uint64)}
	for t := range c.sent {
		if n := c.sent[t].Load(); n > 0 {
			name := typeNames[uint8(t)]
			if name == "" {
				name = "T" + strconv.Itoa(t)
			}
			s.ByType[name] = n
			s.Total += n
		}
	}
	return s
}

// Close closes the connection; pending and later calls fail with EIO.
func (c *Client) Close() error {
	c.mu.Lock()
	already := c.broken != nil
	if !already {
		c.broken = errors.New("ninep: client closed")
	}
	c.mu.Unlock()
	if already {
		return nil
	}
	err := c.rwc.Close()
	c.failPending()
	return err
}

// Done is closed when the connection is closed or broken.
func (c *Client) Done() <-chan struct{} { return c.closed }

// Err is the reason the connection stopped, or nil while it works.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.broken
}

// fail declares the connection broken: one log line, every pending call
// fails with EIO.
func (c *Client) fail(format string, args ...any) {
	reason := fmt.Sprintf(format, args...)
	c.mu.Lock()
	if c.broken != nil {
		c.mu.Unlock()
		return
	}
	c.broken = fmt.Errorf("%w: %s", ErrBroken, reason)
	c.mu.Unlock()
	c.log.Error("9p connection broken", "reason", reason)
	c.rwc.Close()
	c.failPending()
}

func (c *Client) failPending() {
	c.mu.Lock()
	pend := c.pending
	c.pending = make(map[uint16]*call)
	err := c.broken
	select {
	case <-c.closed:
	default:
		close(c.closed)
	}
	c.mu.Unlock()
	for _, cl := range pend {
		c.finish(cl, 0, err)
	}
}

// finish completes cl (its tag is already out of pending).
func (c *Client) finish(cl *call, errno syscall.Errno, err error) {
	cl.errno, cl.err = errno, err
	c.mu.Lock()
	abandoned := cl.abandoned
	close(cl.done)
	c.mu.Unlock()
	if abandoned {
		c.cleanup(cl, errno, err)
	}
}

// cleanup runs cl's abandon hook, once, with the request's outcome.
func (c *Client) cleanup(cl *call, errno syscall.Errno, err error) {
	c.mu.Lock()
	run := !cl.cleaned && cl.onAbandon != nil
	cl.cleaned = true
	c.mu.Unlock()
	if run {
		cl.onAbandon(errno, err)
	}
}

func (c *Client) allocTag() (uint16, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil {
		return 0, c.broken
	}
	if len(c.freeTag) == 0 {
		return 0, fmt.Errorf("%w: out of tags", ErrBroken)
	}
	t := c.freeTag[len(c.freeTag)-1]
	c.freeTag = c.freeTag[:len(c.freeTag)-1]
	return t, nil
}

// start registers a call and sends its request. The returned call is
// pending until its reply arrives.
func (c *Client) start(tag uint16, typ uint8, body, payload, dest []byte, onAbandon func(syscall.Errno, error)) (*call, error) {
	cl := &call{tag: tag, rtype: typ + 1, done: make(chan struct{}), dest: dest, onAbandon: onAbandon}
	c.mu.Lock()
	if c.broken != nil {
		err := c.broken
		c.mu.Unlock()
		return nil, err
	}
	c.pending[tag] = cl
	c.mu.Unlock()

	size := headerLen + len(body) + len(payload)
	buf := getBuf(size)
	b := buf[:0]
	b = binary.LittleEndian.AppendUint32(b, uint32(size))
	b = append(b, typ)
	b = binary.LittleEndian.AppendUint16(b, tag)
	b = append(b, body...)
	b = append(b, payload...)
	c.sent[typ].Add(1)
	c.wmu.Lock()
	_, err := c.rwc.Write(b)
	c.wmu.Unlock()
	putBuf(buf)
	if err != nil {
		c.fail("writing %s: %v", typeNames[typ], err)
		return cl, nil // failPending completes it
	}
	return cl, nil
}

// rpc sends a request and waits for its reply body. On ctx cancellation
// the request is flushed; onAbandon (if set) runs once the server has
// answered or flushed it.
func (c *Client) rpc(ctx context.Context, typ uint8, body []byte, payload []byte, dest []byte, onAbandon func(syscall.Errno, error)) (*call, error) {
	select {
	case c.inflight <- struct{}{}:
	case <-ctx.Done():
		return nil, ctxErrno(ctx)
	case <-c.closed:
		return nil, c.ioErr()
	}
	tag, err := c.allocTag()
	if err != nil {
		<-c.inflight
		return nil, fmt.Errorf("%w", syscall.EIO)
	}
	cl, err := c.start(tag, typ, body, payload, dest, onAbandon)
	if err != nil {
		c.releaseTag(tag)
		<-c.inflight
		return nil, c.ioErr()
	}
	select {
	case <-cl.done:
		<-c.inflight
		return cl, cl.result()
	case <-ctx.Done():
	}
	// Give up: flush in the background.
	c.mu.Lock()
	select {
	case <-cl.done:
		c.mu.Unlock()
		<-c.inflight
		return cl, cl.result()
	default:
	}
	if cl.destBusy {
		// The reader is copying the reply into dest right now: wait.
		c.mu.Unlock()
		<-cl.done
		<-c.inflight
		return cl, cl.result()
	}
	cl.abandoned = true
	cl.dest = nil
	c.mu.Unlock()
	go func() {
		defer func() { <-c.inflight }()
		c.flush(cl)
	}()
	return nil, ctxErrno(ctx)
}

// rpcTag is rpc with a fixed tag (Tversion uses NOTAG).
func (c *Client) rpcTag(ctx context.Context, tag uint16, typ uint8, body []byte) ([]byte, error) {
	cl, err := c.start(tag, typ, body, nil, nil, nil)
	if err != nil {
		return nil, c.ioErr()
	}
	select {
	case <-cl.done:
		return cl.body, cl.result()
	case <-ctx.Done():
		c.fail("version negotiation: %v", ctx.Err())
		return nil, ctxErrno(ctx)
	}
}

func (cl *call) result() error {
	if cl.err != nil {
		return fmt.Errorf("%w: %w", syscall.EIO, cl.err)
	}
	if cl.errno != 0 {
		return cl.errno
	}
	return nil
}

func (c *Client) ioErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil {
		return fmt.Errorf("%w: %w", syscall.EIO, c.broken)
	}
	return syscall.EIO
}

func ctxErrno(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", syscall.ETIMEDOUT, ctx.Err())
	}
	return fmt.Errorf("%w: %w", syscall.EINTR, ctx.Err())
}

// lateReplyWait bounds how long a flushed request's reply is awaited
// before its cleanup runs as if the server had dropped it.
var lateReplyWait = time.Minute

// flush sends Tflush for an abandoned call and waits for Rflush, then
// for the call's own reply if the server has not sent it yet: the p9
// library's server answers a Tflush at once when the request it names
// has been read but not yet started, and then runs the request and
// answers it. So Rflush does not mean the request is over, and the
// call's cleanup (e.g. clunking the fid a walk made, which releases the
// fid number for reuse) must wait for its reply, or the request could
// still create that fid after the clunk, and a later walk reusing the
// number would find the server's fid replaced. A server that drops
// flushed requests, as 9P allows, sends no reply: after lateReplyWait
// the cleanup runs as if the request had succeeded, and the tag stays
// reserved in case the reply still comes.
//
// The old call's tag stays reserved until the Rflush even if its reply
// comes first, so that the Tflush never names a tag that a new request
// (or the Tflush itself: the p9 server would wait for itself forever)
// has taken meanwhile.
func (c *Client) flush(old *call) {
	tag, err := c.allocTag()
	if err != nil {
		return // the call's reply still runs its cleanup
	}
	c.mu.Lock()
	if c.pending[old.tag] != old {
		c.mu.Unlock()
		c.releaseTag(tag) // answered meanwhile: nothing to flush
		return
	}
	old.flushing = true
	c.mu.Unlock()
	var e enc
	e.u16(old.tag)
	cl, err := c.start(tag, tTflush, e.b, nil, nil, nil)
	if err == nil {
		<-cl.done
	}
	c.mu.Lock()
	old.flushing = false
	if old.tagKept {
		old.tagKept = false
		c.freeTag = append(c.freeTag, old.tag)
	}
	still := c.pending[old.tag] == old
	if still {
		old.flushed = true
	}
	c.mu.Unlock()
	if err != nil || cl.err != nil {
		return // connection broken: failPending completes everything
	}
	if !still {
		return // answered: finish ran the cleanup with its outcome
	}
	t := time.NewTimer(lateReplyWait)
	defer t.Stop()
	select {
	case <-old.done: // the late reply ran the cleanup
	case <-c.closed:
	case <-t.C:
		c.cleanup(old, 0, nil)
	}
}

func (c *Client) releaseTag(t uint16) {
	if t == noTag {
		return
	}
	c.mu.Lock()
	c.freeTag = append(c.freeTag, t)
	c.mu.Unlock()
}

// readLoop reads replies and dispatches them by tag.
func (c *Client) readLoop() {
	r := bufio.NewReaderSize(c.rwc, 64<<10)
	var hdr [headerLen]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if c.Err() == nil {
				c.fail("reading reply: %v", err)
			}
			return
		}
		size := binary.LittleEndian.Uint32(hdr[0:])
		typ := hdr[4]
		tag := binary.LittleEndian.Uint16(hdr[5:])
		c.mu.Lock()
		msize := c.msize
		cl := c.pending[tag]
		var dest []byte
		if cl != nil && typ == tTread+1 && cl.rtype == typ {
			dest = cl.dest
			cl.destBusy = dest != nil
		}
		c.mu.Unlock()
		if size < headerLen || size > msize {
			c.fail("reply of %d bytes (msize %d)", size, msize)
			return
		}
		if cl == nil {
			c.fail("reply type %d for unknown tag %d", typ, tag)
			return
		}
		n := int(size) - headerLen
		var errno syscall.Errno
		switch {
		case typ == tRlerror:
			if n != 4 {
				c.fail("Rlerror of %d bytes", n)
				return
			}
			var b [4]byte
			if _, err := io.ReadFull(r, b[:]); err != nil {
				c.fail("reading reply: %v", err)
				return
			}
			v := binary.LittleEndian.Uint32(b[:])
			if v == 0 || v > 4095 {
				c.log.Warn("9p server sent an invalid errno", "errno", v)
				v = uint32(syscall.EIO)
			}
			errno = syscall.Errno(v)
		case typ != cl.rtype:
			c.fail("reply type %d to a request expecting %d", typ, cl.rtype)
			return
		case typ == tTread+1:
			if n < 4 {
				c.fail("short Rread")
				return
			}
			var b [4]byte
			if _, err := io.ReadFull(r, b[:]); err != nil {
				c.fail("reading reply: %v", err)
				return
			}
			count := binary.LittleEndian.Uint32(b[:])
			if int(count) != n-4 || (dest != nil && int(count) > len(dest)) {
				c.fail("Rread of %d bytes (frame %d, asked %d)", count, n-4, len(dest))
				return
			}
			if dest == nil {
				dest = make([]byte, count) // the caller is gone
			}
			if _, err := io.ReadFull(r, dest[:count]); err != nil {
				c.fail("reading reply: %v", err)
				return
			}
			cl.n = int(count)
		default:
			body := make([]byte, n)
			if _, err := io.ReadFull(r, body); err != nil {
				c.fail("reading reply: %v", err)
				return
			}
			cl.body = body
		}
		c.mu.Lock()
		if c.pending[tag] != cl {
			c.mu.Unlock()
			return // broken meanwhile
		}
		delete(c.pending, tag)
		switch {
		case cl.flushing:
			cl.tagKept = true // freed once the Tflush naming it is answered
		case tag != noTag:
			c.freeTag = append(c.freeTag, tag)
		}
		flushed := cl.flushed
		if flushed {
			close(cl.done)
		}
		c.mu.Unlock()
		if flushed {
			// Late reply to a flushed request: its outcome is final
			// now, so its cleanup runs (if the wait for it has not
			// given up already).
			c.cleanup(cl, errno, nil)
			continue
		}
		c.finish(cl, errno, nil)
	}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

func getBuf(n int) []byte {
	if n > 64<<10 {
		return make([]byte, 0, n)
	}
	return (*bufPool.Get().(*[]byte))[:0]
}

func putBuf(b []byte) {
	if cap(b) == 64<<10 {
		b = b[:0]
		bufPool.Put(&b)
	}
}
