package p9server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	"github.com/hugelgupf/p9/p9"
)

// DefaultMessageSize is the largest 9P message (msize) the server accepts
// unless WithMessageSize says otherwise: 1 MiB of payload plus room for the
// largest message header, so a client can read and write 1 MiB per request.
const DefaultMessageSize = 1<<20 + 4096

// minMessageSize is the smallest msize WithMessageSize accepts.
const minMessageSize = 8192

// maxMessageSize is the largest msize hugelgupf/p9 allows.
const maxMessageSize = 4 << 20

// ChmodXattr is a virtual extended attribute: setting it (Txattrcreate
// with a 4-byte little-endian mode, then Twrite and Tclunk) changes the
// file's permission bits including set-user-ID, set-group-ID and sticky.
// It exists because hugelgupf/p9 masks the mode of Tsetattr, Tlcreate
// and Tmkdir with 01777, dropping the set-ID bits; a client sends those
// through this attribute instead. Real xattr names always carry a
// namespace prefix ("user." ...), so it cannot collide with one.
const ChmodXattr = "qmount.chmod"

// Server serves one directory tree over 9P2000.L. It is safe for
// concurrent use: any number of connections may be served at once, and
// each connection may carry many requests in flight.
type Server struct {
	root     string
	log      *slog.Logger
	readOnly bool
	msize    uint32
	// extentMaps: answer EXTENTS requests (p9ext).
	extentMaps bool

	p9srv  *p9.Server
	fs     fsCloser
	closed atomic.Bool

	openFiles atomic.Int64
	stats     counters
}

// fsCloser is the platform file-system backend: it attaches new roots and
// releases the exported root when the server is closed.
type fsCloser interface {
	p9.Attacher
	Close() error
}

// Option configures a Server.
type Option func(*Server) error

// WithLogger sets the logger (default: discard). At debug level the 9P
// library's per-message trace is logged too, which is slow.
func WithLogger(l *slog.Logger) Option {
	return func(s *Server) error {
		if l != nil {
			s.log = l
		}
		return nil
	}
}

// WithReadOnly makes every mutation fail with EROFS: create, mkdir,
// symlink, link, mknod, rename, unlink, setattr, setxattr, removexattr, and
// opening for writing or with O_TRUNC.
func WithReadOnly() Option {
	return func(s *Server) error {
		s.readOnly = true
		return nil
	}
}

// WithExtentMaps makes the server answer EXTENTS requests (p9ext): where
// a file's data lies on the block device the exported tree was mounted
// from, so that a host that sees the same device can read the data
// itself. Give it only when the tree is a file system mounted straight
// from a disk or partition the host reads (no device mapper, md, loop
// or FUSE in between) and not in ext4's data=journal mode.
func WithExtentMaps() Option {
	return func(s *Server) error {
		s.extentMaps = true
		return nil
	}
}

// WithMessageSize sets the largest 9P message the server negotiates
// (default DefaultMessageSize, at most 4 MiB). A client asking for less
// gets what it asked for.
func WithMessageSize(n uint32) Option {
	return func(s *Server) error {
		if n < minMessageSize || n > maxMessageSize {
			return fmt.Errorf("message size %d outside [%d, %d]", n, minMessageSize, maxMessageSize)
		}
		s.msize = n
		return nil
	}
}

// New returns a server exporting the directory tree at root. The root is
// opened once; every later lookup is relative to it and never leaves it.
// Close releases it.
func New(root string, opts ...Option) (*Server, error) {
	s := &Server{
		root:  root,
		log:   slog.New(slog.DiscardHandler),
		msize: DefaultMessageSize,
	}
	for _, o := range opts {
		if err := o(s); err != nil {
			return nil, fmt.Errorf("p9server: applying option: %w", err)
		}
	}
	fs, err := newFS(root, s)
	if err != nil {
		return nil, fmt.Errorf("p9server: opening root %q: %w", root, err)
	}
	s.fs = fs
	var srvOpts []p9.ServerOpt
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		srvOpts = append(srvOpts, p9.WithServerLogger(slogPrintf{s.log}))
	}
	s.p9srv = p9.NewServer(fs, srvOpts...)
	return s, nil
}

// Close releases the exported root. Connections still being served keep
// working with the files they have already walked to; new attaches fail.
func (s *Server) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	return s.fs.Close()
}

// Serve serves one connection until the peer closes it (then it returns
// nil) or ctx is done (then it closes conn and returns ctx's error). It
// returns only after every request of the connection has been answered
// and every file the connection opened has been released. conn is closed
// on return.
//
// conn may be anything that reads and writes a byte stream: a socket, a
// virtio-serial port (*os.File), a vsock connection. Serve wraps it in a
// buffered, frame-coalescing transport (see the package documentation).
func (s *Server) Serve(ctx context.Context, conn io.ReadWriteCloser) error {
	c := newFrameConn(conn, s.msize, &s.stats)
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	_ = s.p9srv.Handle(c, c) // Handle always returns nil; it closes c.
	c.Close()
	if err := ctx.Err(); err != nil {
		return err
	}
	return nil
}

// ServeListener accepts connections from l and serves each with Serve
// until ctx is done; then it closes l, waits for the connections to finish
// and returns nil. An accept error other than the listener being closed is
// returned (after the live connections have finished).
func (s *Server) ServeListener(ctx context.Context, l net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	for {
		conn, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("p9server: accepting: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Serve(ctx, conn); err != nil && ctx.Err() == nil {
				s.log.Warn("9p connection ended", "err", err)
			}
		}()
	}
}

// OpenFiles is the number of server-side file objects alive (one per
// walked fid, clone or created file, across all connections, plus any a
// handler holds for a moment). It returns to its earlier value when the
// client has clunked every fid it made, so tests use it to find leaks.
func (s *Server) OpenFiles() int { return int(s.openFiles.Load()) }

// Stats counts the 9P messages the server received, by message type.
type Stats struct {
	// Requests is the total number of 9P messages received.
	Requests uint64
	// ByType maps a message name ("Twalkgetattr", "Tread", ...) to the
	// number received. Types never seen are absent.
	ByType map[string]uint64
	// BytesIn and BytesOut count the 9P bytes received and sent.
	BytesIn, BytesOut uint64
}

// Stats returns the request counters, summed over every connection since
// the server was created. They are counted at the transport, exactly: one
// per incoming 9P frame.
func (s *Server) Stats() Stats {
	st := Stats{ByType: make(map[string]uint64)}
	for t := range s.stats.byType {
		n := s.stats.byType[t].Load()
		if n == 0 {
			continue
		}
		st.Requests += n
		st.ByType[MessageName(uint8(t))] += n
	}
	st.BytesIn = s.stats.bytesIn.Load()
	st.BytesOut = s.stats.bytesOut.Load()
	return st
}

type counters struct {
	byType            [256]atomic.Uint64
	bytesIn, bytesOut atomic.Uint64
}

// MessageName returns the 9P2000.L name of a message type number, e.g.
// "Twalk" for 110, or "T?N" / "R?N" for a number it does not know.
func MessageName(t uint8) string {
	if n, ok := messageNames[t]; ok {
		return n
	}
	if t%2 == 0 {
		return fmt.Sprintf("T?%d", t)
	}
	return fmt.Sprintf("R?%d", t)
}

var messageNames = map[uint8]string{
	7: "Rlerror", 8: "Tstatfs", 9: "Rstatfs", 12: "Tlopen", 13: "Rlopen",
	14: "Tlcreate", 15: "Rlcreate", 16: "Tsymlink", 17: "Rsymlink",
	18: "Tmknod", 19: "Rmknod", 20: "Trename", 21: "Rrename",
	22: "Treadlink", 23: "Rreadlink", 24: "Tgetattr", 25: "Rgetattr",
	26: "Tsetattr", 27: "Rsetattr", 30: "Txattrwalk", 31: "Rxattrwalk",
	32: "Txattrcreate", 33: "Rxattrcreate", 40: "Treaddir", 41: "Rreaddir",
	50: "Tfsync", 51: "Rfsync", 52: "Tlock", 53: "Rlock",
	54: "Tgetlock", 55: "Rgetlock", 70: "Tlink", 71: "Rlink",
	72: "Tmkdir", 73: "Rmkdir", 74: "Trenameat", 75: "Rrenameat",
	76: "Tunlinkat", 77: "Runlinkat", 100: "Tversion", 101: "Rversion",
	102: "Tauth", 103: "Rauth", 104: "Tattach", 105: "Rattach",
	106: "Terror", 107: "Rerror", 108: "Tflush", 109: "Rflush",
	110: "Twalk", 111: "Rwalk", 112: "Topen", 113: "Ropen",
	114: "Tcreate", 115: "Rcreate", 116: "Tread", 117: "Rread",
	118: "Twrite", 119: "Rwrite", 120: "Tclunk", 121: "Rclunk",
	122: "Tremove", 123: "Rremove", 124: "Tflushf", 125: "Rflushf",
	126: "Twalkgetattr", 127: "Rwalkgetattr", 128: "Tucreate", 129: "Rucreate",
	130: "Tumkdir", 131: "Rumkdir", 132: "Tumknod", 133: "Rumknod",
	134: "Tusymlink", 135: "Rusymlink",
}

// slogPrintf adapts slog to the 9P library's Printf logger, at debug level.
type slogPrintf struct{ l *slog.Logger }

func (p slogPrintf) Printf(format string, v ...any) {
	p.l.Debug(fmt.Sprintf(format, v...))
}
