package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qmount/qmount/internal/wire"
	"github.com/qmount/qmount/p9server"
)

// DefaultMountDir is where the guest mounts the filesystem it serves.
const DefaultMountDir = "/mnt/root"

// DiskFinder finds the block device of a disk by its virtio serial.
// Implementations must be safe for concurrent use.
type DiskFinder interface {
	// Find returns the device node of partition (1-based; 0 is the whole
	// disk) of the disk whose serial is serial, waiting briefly for it to
	// appear.
	Find(ctx context.Context, serial string, partition int) (string, error)
}

// RegionFinder is what a DiskFinder may also know: where a device it
// found lies on its disk (byte offset and size), for extent maps.
type RegionFinder interface {
	Region(dev string) (offset, size int64, err error)
}

// ModuleLoader loads kernel modules, with their dependencies. Loading a
// module that is already loaded or built in succeeds. Implementations must
// be safe for concurrent use.
type ModuleLoader interface {
	Load(ctx context.Context, names ...string) error
}

// Config holds what an Agent needs.
type Config struct {
	// MountDir is where the filesystem is mounted; created if missing.
	// Empty means DefaultMountDir.
	MountDir string
	// Disks resolves the disk serials of a mount request.
	Disks DiskFinder
	// NineP accepts the host's 9P connections (the virtio-serial port
	// and/or vsock). The agent accepts from it once mounted, serves the
	// mount with p9server on each connection, and closes it at shutdown.
	NineP net.Listener
}

// Option sets an optional knob of an Agent.
type Option func(*Agent)

// WithLogger sets the logger (default: discard). The agent forwards its
// own log records to the host over the control connection as well.
func WithLogger(l *slog.Logger) Option {
	return func(a *Agent) {
		if l != nil {
			a.base = l.Handler()
		}
	}
}

// WithModules makes the agent load the modules info names for a
// filesystem type with m before mounting it.
func WithModules(m ModuleLoader, info *GuestInfo) Option {
	return func(a *Agent) { a.modules, a.info = m, info }
}

// WithServerOptions adds options for the 9P server (p9server.New); the
// agent adds p9server.WithReadOnly itself for read-only mounts.
func WithServerOptions(opts ...p9server.Option) Option {
	return func(a *Agent) { a.srvOpts = append(a.srvOpts, opts...) }
}

// WithTimeline seeds the timeline with milestones reached before the agent
// started (init, boot modules).
func WithTimeline(t wire.Timeline) Option {
	return func(a *Agent) { a.tl = t }
}

// WithKernel sets the kernel release reported in hello (default: uname).
func WithKernel(release string) Option {
	return func(a *Agent) { a.kernel = release }
}

// Agent mounts what the host asks for over the control connection and
// serves it over 9P. One Agent serves one control session.
type Agent struct {
	cfg     Config
	sys     system
	base    slog.Handler
	log     *slog.Logger
	modules ModuleLoader
	info    *GuestInfo
	kernel  string
	srvOpts []p9server.Option

	tlMu sync.Mutex
	tl   wire.Timeline

	// sink, when set, receives log records to forward to the host.
	sink atomic.Pointer[func(level, msg string)]

	firstByte atomic.Bool
}

// New returns an Agent for cfg. It fails on platforms without mount(2).
func New(cfg Config, opts ...Option) (*Agent, error) {
	if platform == nil {
		return nil, fmt.Errorf("agent: unsupported platform %s", runtime.GOOS)
	}
	if cfg.Disks == nil || cfg.NineP == nil {
		return nil, errors.New("agent: config needs Disks and NineP")
	}
	if cfg.MountDir == "" {
		cfg.MountDir = DefaultMountDir
	}
	a := &Agent{cfg: cfg, sys: platform, base: slog.DiscardHandler}
	for _, o := range opts {
		o(a)
	}
	a.log = slog.New(&forwardHandler{base: a.base, a: a})
	if a.kernel == "" {
		a.kernel = a.sys.kernelRelease()
	}
	if a.tl.Init == 0 {
		a.tl.Init = a.sys.bootTimeMS()
	}
	return a, nil
}

// Timeline returns the milestones recorded so far.
func (a *Agent) Timeline() wire.Timeline {
	a.tlMu.Lock()
	defer a.tlMu.Unlock()
	return a.tl
}

func (a *Agent) mark(field *int64) int64 {
	now := a.sys.bootTimeMS()
	a.tlMu.Lock()
	*field = now
	a.tlMu.Unlock()
	return now
}

// Hello is the first message the agent writes on a control connection.
func (a *Agent) Hello() *wire.Message { return HelloMessage(a.kernel) }

// HelloMessage is the guest's hello: protocol version, kernel release and
// architecture.
func HelloMessage(kernel string) *wire.Message {
	return &wire.Message{Type: wire.TypeHello, Version: wire.Version, Kernel: kernel, Arch: runtime.GOARCH}
}

// Ending says why a session ended.
type Ending string

// Why sessions end.
const (
	EndShutdown Ending = "shutdown"   // the host sent shutdown
	EndLost     Ending = "connection" // the control connection was lost
	EndCanceled Ending = "signal"     // ctx was canceled (SIGTERM/SIGINT)
)

// Serve runs one control session on ctl: it writes hello, then handles
// the host's messages until shutdown, loss of ctl, or the end of ctx. Then
// it stops serving 9P, syncs, unmounts, and sends bye if ctl still works.
// It closes ctl and the 9P listener, and returns why the session ended
// and the teardown's errors, if any.
func (a *Agent) Serve(ctx context.Context, ctl io.ReadWriteCloser) (Ending, error) {
	return a.serve(ctx, ctl, false)
}

// ServeAfterHello is Serve for a connection on which Hello was already
// written: on a virtio port, writing hello is how the guest learns that
// the host is there, so the connector writes it.
func (a *Agent) ServeAfterHello(ctx context.Context, ctl io.ReadWriteCloser) (Ending, error) {
	return a.serve(ctx, ctl, true)
}

// session is the state of one control connection.
type session struct {
	a   *Agent
	ctl io.ReadWriteCloser
	out chan *wire.Message // to the writer goroutine
	wg  sync.WaitGroup     // the writer
	// writeFailed is set when a write failed: nothing more is sent.
	writeFailed atomic.Bool
	outMu       sync.Mutex // held to send on out
	outClosed   bool

	m *mounted // nil until mounted

	msgs chan *wire.Message // from the reader
	gone chan struct{}      // closed when the reader stops (connection lost)
	// shutdownAsked is set when shutdown arrived while a step waited for
	// another message (a passphrase).
	shutdownAsked bool

	ex *execution // the running command, if any
}

// mounted is a served mount.
type mounted struct {
	dir    string
	fstype string
	ro     bool
	stop   context.CancelFunc
	srv    *p9server.Server
	served sync.WaitGroup
	mu     sync.Mutex
	conns  map[io.Closer]bool

	st   *stack     // the storage stack under the mount; nil if none
	fuse *fuseMount // the FUSE daemon serving dir (ntfs-3g); nil for a kernel mount
	// extents: the host may read file data from the disk (extent maps).
	extents *wire.ExtentSource
}

func (a *Agent) serve(ctx context.Context, ctl io.ReadWriteCloser, helloSent bool) (Ending, error) {
	a.tlMu.Lock()
	if a.tl.Connected == 0 {
		a.tl.Connected = a.sys.bootTimeMS()
	}
	a.tlMu.Unlock()

	s := &session{a: a, ctl: ctl, out: make(chan *wire.Message, 256),
		msgs: make(chan *wire.Message), gone: make(chan struct{})}
	enc := wire.NewEncoder(ctl)
	s.wg.Go(func() {
		for m := range s.out {
			if s.writeFailed.Load() {
				continue
			}
			if err := enc.Encode(m); err != nil {
				s.writeFailed.Store(true)
			}
		}
	})
	if !helloSent {
		s.send(a.Hello())
	}
	sink := func(level, msg string) {
		s.put(&wire.Message{Type: wire.TypeLog, Level: level, Msg: msg}, false) // never block logging
	}
	a.sink.Store(&sink)

	msgs := s.msgs
	lost := make(chan error, 1)
	done := make(chan struct{})
	defer close(done)
	go func() {
		er := &errReader{r: ctl}
		dec := wire.NewDecoder(er)
		for {
			m, err := dec.Decode()
			if err != nil {
				if er.err != nil || errors.Is(err, io.EOF) || errors.Is(err, bufio.ErrTooLong) {
					lost <- err
					close(s.gone)
					return
				}
				// A bad line: report it and keep reading.
				m = &wire.Message{Type: wire.TypeError, Step: "control", Error: err.Error()}
			}
			select {
			case msgs <- m:
			case <-done:
				return
			}
		}
	}()

	var end Ending
loop:
	for {
		select {
		case m := <-msgs:
			switch m.Type {
			case wire.TypeError: // from the reader: a line we could not take
				a.log.Warn("bad control line", "err", m.Error)
				s.send(m)
			case wire.TypeMount:
				s.handleMount(ctx, m.Mount)
				if s.shutdownAsked {
					end = EndShutdown
					break loop
				}
			case wire.TypeExec:
				s.handleExec(ctx, m.Exec)
			case wire.TypeInput:
				s.handleInput(m)
			case wire.TypeUnlock:
				a.log.Warn("passphrase given when none was asked for")
			case wire.TypeShutdown:
				end = EndShutdown
				break loop
			default:
				a.log.Warn("unexpected control message", "type", m.Type)
				s.send(&wire.Message{Type: wire.TypeError, Step: "control", Error: "unexpected message " + m.Type})
			}
		case code := <-s.exited():
			s.send(&wire.Message{Type: wire.TypeExited, Code: code})
		case err := <-lost:
			end = EndLost
			a.sink.Store(nil) // nobody reads: forwarding would only block
			a.log.Warn("control connection lost; shutting down", "err", err)
			break loop
		case <-ctx.Done():
			end = EndCanceled
			a.log.Info("signalled; shutting down")
			break loop
		}
	}
	err := s.teardown(end)
	return end, err
}

// send queues m for the host, waiting up to byeWait for room. After a
// failed write, or once the session is closing, nothing is sent.
func (s *session) send(m *wire.Message) { s.put(m, true) }

func (s *session) put(m *wire.Message, wait bool) {
	s.outMu.Lock()
	defer s.outMu.Unlock()
	if s.outClosed || s.writeFailed.Load() {
		return
	}
	if !wait {
		// Only senders hold outMu, so there is room; keep a quarter of
		// the queue for the messages that matter.
		if len(s.out) < cap(s.out)*3/4 {
			s.out <- m
		}
		return
	}
	t := time.NewTimer(byeWait)
	defer t.Stop()
	select {
	case s.out <- m:
	case <-t.C: // the host is not reading
	}
}

// closeOut ends the writer after the queued messages.
func (s *session) closeOut() {
	s.outMu.Lock()
	defer s.outMu.Unlock()
	if !s.outClosed {
		s.outClosed = true
		close(s.out)
	}
}

// errReader remembers the error its reader returned.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil {
		e.err = err
	}
	return n, err
}

// stepError is a failure of one step of a mount request.
type stepError struct {
	step string
	err  error
}

func (e *stepError) Error() string { return e.step + ": " + e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

func (s *session) handleMount(ctx context.Context, req *wire.MountRequest) {
	a := s.a
	if s.m != nil {
		s.send(&wire.Message{Type: wire.TypeError, Step: "mount", Error: "already mounted"})
		return
	}
	a.log.Info("mount requested", "disks", strings.Join(req.Disks, ","), "partition", req.Partition,
		"fstype", req.FSType, "readonly", req.ReadOnly)
	m, err := a.mount(ctx, req, s.askPassphrase)
	if err != nil {
		var se *stepError
		step := "mount"
		if errors.As(err, &se) {
			step = se.step
		}
		text := err.Error()
		if se != nil {
			text = se.err.Error()
		}
		a.log.Error("mount failed", "step", step, "err", text)
		s.send(&wire.Message{Type: wire.TypeError, Step: step, Error: text})
		return
	}
	a.mark(&a.tl.Mounted)
	s.m = m
	if err := s.startServing(m); err != nil {
		a.log.Error("serving failed", "err", err)
		s.send(&wire.Message{Type: wire.TypeError, Step: "serve", Error: err.Error()})
		return
	}
	a.mark(&a.tl.Serving)
	tl := a.Timeline()
	s.send(&wire.Message{Type: wire.TypeMounted, FSType: m.fstype, ReadOnly: m.ro, Timeline: &tl, Extents: m.extents})
	a.log.Info(FormatTimeline(tl))
}

// FormatTimeline renders a timeline as the guest logs it on its console:
// "timeline init=.. modules=.. connected=.. mounted=.. serving=.. (ms)".
func FormatTimeline(t wire.Timeline) string {
	return fmt.Sprintf("timeline init=%d modules=%d connected=%d mounted=%d serving=%d (ms)",
		t.Init, t.Modules, t.Connected, t.Mounted, t.Serving)
}

// mount resolves the disks, loads the modules and mounts the filesystem.
func (a *Agent) mount(ctx context.Context, req *wire.MountRequest, ask askFunc) (*mounted, error) {
	devs := make([]string, len(req.Disks))
	for i, serial := range req.Disks {
		part := 0
		if i == 0 {
			part = req.Partition
		}
		dev, err := a.cfg.Disks.Find(ctx, serial, part)
		if err != nil {
			return nil, &stepError{"disk", fmt.Errorf("finding disk %s: %w", serial, err)}
		}
		devs[i] = dev
	}
	disk0 := devs[0]
	devs, st, err := a.assemble(ctx, req, devs, ask)
	if err != nil {
		return nil, err
	}
	m, err := a.mountDevs(ctx, req, devs)
	if err != nil {
		if terr := st.teardown(context.WithoutCancel(ctx)); terr != nil {
			a.log.Warn("undoing the storage stack", "err", terr)
		}
		return nil, err
	}
	m.st = st
	if len(devs) == 1 && devs[0] == disk0 && m.fuse == nil {
		// Mounted straight from the disk (or its partition).
		m.extents = a.extentSource(devs[0], m.fstype)
	}
	return m, nil
}

// extentSource says where the host finds the device of a file system
// mounted straight from disk 0 (or one of its partitions), so that it
// may read file data itself at the places extent maps give, or nil: only
// for ext2/3/4 (not in data=journal mode, where data may wait in the
// journal) and xfs, whose FIEMAP addresses are device offsets.
func (a *Agent) extentSource(dev, fstype string) *wire.ExtentSource {
	rf, ok := a.cfg.Disks.(RegionFinder)
	if !ok {
		return nil
	}
	switch fstype {
	case "ext2", "ext3", "ext4":
		opts, err := ext4Options("/proc", dev)
		if err != nil && fstype != "ext2" {
			a.log.Info("no extent maps: ext4 options unknown", "err", err)
			return nil
		}
		if slices.Contains(opts, "data=journal") {
			return nil
		}
	case "xfs":
	default:
		return nil
	}
	off, size, err := rf.Region(dev)
	if err != nil {
		a.log.Info("no extent maps", "err", err)
		return nil
	}
	return &wire.ExtentSource{Disk: 0, Offset: off, Size: size}
}

// mountDevs mounts the filesystem on devs (the first, plus the other
// devices of a multi-device btrfs).
func (a *Agent) mountDevs(ctx context.Context, req *wire.MountRequest, devs []string) (*mounted, error) {
	dev := devs[0]
	fstype := req.FSType
	if fstype == "ntfs" { // probe's name: whichever driver this guest has
		fstype = "ntfs3"
		if !a.hasDriver(ctx, "ntfs3") && haveTool("ntfs-3g") {
			fstype = "ntfs-3g"
		}
	}
	if fstype == "" {
		t, err := detectDevice(dev)
		if err != nil {
			return nil, &stepError{"detect", err}
		}
		fstype = t
		if t == "ntfs3" && !a.hasDriver(ctx, "ntfs3") && haveTool("ntfs-3g") {
			fstype = "ntfs-3g" // no kernel driver here: the FUSE one
		}
		if t != "" {
			a.log.Info("detected filesystem", "fstype", fstype)
		}
	}
	if fstype == "ntfs-3g" {
		return a.mountNTFS3G(ctx, dev, req)
	}
	var modErr error
	if a.modules != nil {
		mods := a.info.ModulesFor(fstype)
		if fstype == "" {
			mods = a.info.AllFSModules()
		}
		if len(mods) > 0 {
			modErr = a.modules.Load(ctx, mods...)
			if modErr != nil {
				a.log.Warn("loading filesystem modules", "fstype", fstype, "err", modErr)
			}
		}
	}
	opts := req.Options
	if fstype == "btrfs" {
		for _, d := range devs[1:] {
			opts = joinOptions(opts, "device="+d)
		}
	}
	if err := os.MkdirAll(a.cfg.MountDir, 0o755); err != nil {
		return nil, &stepError{"mount", fmt.Errorf("creating mount point: %w", err)}
	}
	types := []string{fstype}
	if fstype == "" {
		all, err := a.sys.filesystems()
		if err != nil {
			return nil, &stepError{"detect", err}
		}
		types = all
	}
	var errs []error
	for _, t := range types {
		err := a.sys.mount(ctx, mountSpec{Source: dev, Target: a.cfg.MountDir, FSType: t, Data: opts, ReadOnly: req.ReadOnly})
		if err == nil {
			m := &mounted{dir: a.cfg.MountDir, fstype: t, ro: a.sys.readOnly(a.cfg.MountDir), conns: map[io.Closer]bool{}}
			a.log.Info("mounted", "dev", dev, "fstype", t, "dir", m.dir, "readonly", m.ro)
			return m, nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nil, &stepError{"detect", fmt.Errorf("no filesystem type to try on %s", dev)}
	}
	err := errs[len(errs)-1]
	if fstype == "" {
		err = fmt.Errorf("no filesystem type the kernel knows mounts %s: %w", dev, err)
	}
	if modErr != nil && errors.Is(err, errNoDriver) {
		return nil, &stepError{"modules", modErr}
	}
	return nil, &stepError{"mount", err}
}

// joinOptions appends a mount option to a comma-separated list.
func joinOptions(opts, o string) string {
	if opts == "" {
		return o
	}
	return opts + "," + o
}

// detectDevice reads the superblock of dev.
func detectDevice(dev string) (string, error) {
	f, err := os.Open(dev)
	if err != nil {
		return "", fmt.Errorf("detecting filesystem: %w", err)
	}
	defer f.Close()
	t, err := DetectFSType(f)
	if err != nil {
		return "", fmt.Errorf("detecting filesystem on %s: %w", dev, err)
	}
	return t, nil
}

// startServing accepts 9P connections on the listener and serves the
// mount on each.
func (s *session) startServing(m *mounted) error {
	a := s.a
	opts := a.srvOpts
	if m.ro {
		opts = append(opts[:len(opts):len(opts)], p9server.WithReadOnly())
	}
	if m.extents != nil {
		opts = append(opts[:len(opts):len(opts)], p9server.WithExtentMaps())
	}
	srv, err := p9server.New(m.dir, opts...)
	if err != nil {
		return fmt.Errorf("starting 9P server: %w", err)
	}
	m.srv = srv
	ctx, cancel := context.WithCancel(context.Background())
	m.stop = cancel
	m.served.Go(func() {
		for {
			c, err := a.cfg.NineP.Accept()
			if err != nil {
				if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
					a.log.Warn("accepting 9P connections", "err", err)
				}
				return
			}
			conn := &plainConn{rwc: c, onFirst: a.firstByteSeen}
			m.mu.Lock()
			m.conns[conn] = true
			m.mu.Unlock()
			a.log.Debug("9P connection", "remote", c.RemoteAddr())
			m.served.Go(func() {
				err := srv.Serve(ctx, conn)
				if err != nil && ctx.Err() == nil {
					a.log.Warn("serving 9P", "err", err)
				}
				conn.Close()
				m.mu.Lock()
				delete(m.conns, conn)
				m.mu.Unlock()
			})
		}
	})
	return nil
}

func (a *Agent) firstByteSeen() {
	if a.firstByte.CompareAndSwap(false, true) {
		a.log.Info(fmt.Sprintf("first 9P byte at %d ms", a.sys.bootTimeMS()))
	}
}

// plainConn hides everything but Read, Write and Close: p9's vecnet uses
// recvmsg on anything that implements syscall.Conn, which fails on a
// virtio port (an *os.File). It reports the first byte read.
type plainConn struct {
	rwc     io.ReadWriteCloser
	onFirst func()
	seen    atomic.Bool
	once    sync.Once
	err     error
}

func (c *plainConn) Read(p []byte) (int, error) {
	n, err := c.rwc.Read(p)
	if n > 0 && !c.seen.Load() {
		c.seen.Store(true)
		if c.onFirst != nil {
			c.onFirst()
		}
	}
	return n, err
}

func (c *plainConn) Write(p []byte) (int, error) { return c.rwc.Write(p) }

func (c *plainConn) Close() error {
	c.once.Do(func() { c.err = c.rwc.Close() })
	return c.err
}

// Teardown deadlines.
const (
	stopServingWait = 5 * time.Second
	byeWait         = 2 * time.Second
	unmountTries    = 20
	unmountInterval = 100 * time.Millisecond
)

// teardown stops serving, syncs, unmounts and says bye.
func (s *session) teardown(end Ending) error {
	a := s.a
	var errs []error
	if err := a.cfg.NineP.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		errs = append(errs, fmt.Errorf("closing 9P listener: %w", err))
	}
	if m := s.m; m != nil && m.stop != nil {
		m.stop()
		m.mu.Lock()
		for c := range m.conns {
			c.Close()
		}
		m.mu.Unlock()
		stopped := make(chan struct{})
		go func() { m.served.Wait(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(stopServingWait):
			a.log.Warn("9P server did not stop in time; unmounting anyway")
		}
		if m.srv != nil {
			if err := m.srv.Close(); err != nil {
				errs = append(errs, fmt.Errorf("closing 9P server: %w", err))
			}
		}
	}
	a.sys.sync()
	if s.ex != nil {
		s.ex.kill()
	}
	if m := s.m; m != nil {
		if err := a.unmount(m.dir); err != nil {
			errs = append(errs, err)
		} else {
			a.log.Info("unmounted", "dir", m.dir)
		}
		if m.fuse != nil {
			if err := m.fuse.wait(); err != nil {
				errs = append(errs, err)
			}
		}
		if m.st != nil {
			a.sys.sync()
			if err := m.st.teardown(context.Background()); err != nil {
				errs = append(errs, fmt.Errorf("closing the storage stack: %w", err))
			}
		}
		s.m = nil
	}
	a.sink.Store(nil)
	if end != EndLost {
		s.send(&wire.Message{Type: wire.TypeBye})
	}
	s.closeOut()
	if end != EndLost {
		flushed := make(chan struct{})
		go func() { s.wg.Wait(); close(flushed) }()
		select {
		case <-flushed:
		case <-time.After(byeWait): // the host is not reading; power off anyway
		}
	}
	if err := s.ctl.Close(); err != nil && !errors.Is(err, os.ErrClosed) && !errors.Is(err, net.ErrClosed) {
		errs = append(errs, fmt.Errorf("closing control connection: %w", err))
	}
	return errors.Join(errs...)
}

// unmount unmounts dir, retrying while busy, and detaches it as a last
// resort (after a sync).
func (a *Agent) unmount(dir string) error {
	var err error
	for range unmountTries {
		if err = a.sys.unmount(dir, false); err == nil {
			return nil
		}
		time.Sleep(unmountInterval)
	}
	a.log.Warn("unmount keeps failing; detaching", "dir", dir, "err", err)
	a.sys.sync()
	if derr := a.sys.unmount(dir, true); derr != nil {
		return fmt.Errorf("unmounting %s: %w", dir, errors.Join(err, derr))
	}
	return fmt.Errorf("unmounting %s: detached after: %w", dir, err)
}

// forwardHandler hands records to the base handler and, during a session,
// to the host.
type forwardHandler struct {
	base   slog.Handler
	a      *Agent
	prefix string // attrs added with WithAttrs, rendered
	group  string
}

func (h *forwardHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.base.Enabled(ctx, l) || (l >= slog.LevelInfo && h.a.sink.Load() != nil)
}

func (h *forwardHandler) Handle(ctx context.Context, r slog.Record) error {
	var err error
	if h.base.Enabled(ctx, r.Level) {
		err = h.base.Handle(ctx, r)
	}
	if sink := h.a.sink.Load(); sink != nil && r.Level >= slog.LevelInfo {
		var b strings.Builder
		b.WriteString(r.Message)
		b.WriteString(h.prefix)
		r.Attrs(func(at slog.Attr) bool {
			writeAttr(&b, h.group, at)
			return true
		})
		(*sink)(levelName(r.Level), b.String())
	}
	return err
}

func (h *forwardHandler) WithAttrs(as []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.prefix)
	for _, at := range as {
		writeAttr(&b, h.group, at)
	}
	return &forwardHandler{base: h.base.WithAttrs(as), a: h.a, prefix: b.String(), group: h.group}
}

func (h *forwardHandler) WithGroup(name string) slog.Handler {
	g := name
	if h.group != "" {
		g = h.group + "." + name
	}
	return &forwardHandler{base: h.base.WithGroup(name), a: h.a, prefix: h.prefix, group: g}
}

func writeAttr(b *strings.Builder, group string, at slog.Attr) {
	at.Value = at.Value.Resolve()
	if at.Equal(slog.Attr{}) {
		return
	}
	if at.Value.Kind() == slog.KindGroup {
		g := at.Key
		if group != "" && g != "" {
			g = group + "." + g
		} else if g == "" {
			g = group
		}
		for _, sub := range at.Value.Group() {
			writeAttr(b, g, sub)
		}
		return
	}
	b.WriteByte(' ')
	if group != "" {
		b.WriteString(group)
		b.WriteByte('.')
	}
	b.WriteString(at.Key)
	b.WriteByte('=')
	v := at.Value.String()
	if v == "" || strings.ContainsAny(v, " \t\n\"=") {
		fmt.Fprintf(b, "%q", v)
	} else {
		b.WriteString(v)
	}
}

func levelName(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "error"
	case l >= slog.LevelWarn:
		return "warn"
	case l >= slog.LevelInfo:
		return "info"
	}
	return "debug"
}
