package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qmount/qmount/guests"
	"github.com/qmount/qmount/internal/wire"
	"github.com/qmount/qmount/session"
	"github.com/qmount/qmount/vmm"
)

// FUSE is a served FUSE mount.
type FUSE interface {
	// Wait blocks until the mount is gone (unmounted by anyone).
	Wait()
	// Unmount unmounts it; it fails (EBUSY) while files are in use.
	Unmount() error
}

// FUSEOptions are what Run asks of the FUSE layer.
type FUSEOptions struct {
	ReadOnly bool
	// FSName is shown as the mount's source (e.g. in /proc/mounts).
	FSName string
	Owner  Owner
	// AllowOther lets users other than the mounting one in (FUSE
	// allow_other).
	AllowOther bool
	Logger     *slog.Logger
	// Direct, when set, is the region of a disk holding the guest's
	// file system, from which the FUSE layer may read file data itself
	// wherever the guest gives extent maps (client.WithDirectRead). The
	// FUSE layer does not close it; Run does once the mount is gone.
	Direct *DirectRegion
}

// DirectRegion is Size bytes at Offset of File.
type DirectRegion struct {
	File         *os.File
	Offset, Size int64
}

// MountFunc serves the 9P stream conn at mountpoint through FUSE. The
// mount command passes the client package's Mount.
type MountFunc func(ctx context.Context, conn io.ReadWriteCloser, mountpoint string, o FUSEOptions) (FUSE, error)

// Config holds what Run needs besides the Plan.
type Config struct {
	Driver vmm.Driver
	Mount  MountFunc
	// Logger receives the supervisor's log besides its log file (e.g. the
	// terminal in --foreground -v). Default: only the file.
	Logger *slog.Logger
	// Progress is called with "locking", "booting", "mounting" and, once
	// the mount is live, "ready". It must not block.
	Progress func(step string)
	// OnState is called with the new mount's state as soon as it exists
	// (the parent learns the log path from it). Optional.
	OnState func(*State)
	// ShutdownTimeout bounds the guest's sync+unmount+power-off (default
	// 60 s); the VM is killed after it.
	ShutdownTimeout time.Duration
	// Passphrase is asked for the passphrase of an encrypted container on
	// disk (a path of Plan.Disks; kind is "LUKS1", "LUKS2" or
	// "BitLocker"), attempt counting from 1 (more after a wrong one). An
	// error declines, and its text says why in the mount's error. The
	// passphrase goes to the guest over the control channel only; it is
	// never logged. Nil declines every request.
	Passphrase func(ctx context.Context, disk, kind string, attempt int) (string, error)
}

// Run mounts plan and serves it until it is unmounted (FUSE unmount, an
// unmount request on the control socket, ctx cancelled by SIGTERM/SIGINT,
// or the VM stopping), then shuts down cleanly. It returns an error when
// the mount could not be made (with nothing left behind: VM, state, socket,
// created mount point) or when the shutdown was not clean.
func Run(ctx context.Context, plan *Plan, cfg Config) (err error) {
	progress := cfg.Progress
	if progress == nil {
		progress = func(string) {}
	}
	l := Layout{Root: plan.StateDir}
	st, err := l.create()
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(st.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		st.remove()
		return fmt.Errorf("opening the log: %w", err)
	}
	defer logf.Close()
	var h slog.Handler = slog.NewTextHandler(logf, &slog.HandlerOptions{Level: slog.LevelDebug})
	if cfg.Logger != nil {
		h = teeHandler{h, cfg.Logger.Handler()}
	}
	log := slog.New(h)

	s := &super{plan: plan, cfg: cfg, log: log, layout: l, st: st, stopCh: make(chan struct{})}
	defer func() {
		if err != nil {
			log.Error("mount ended with an error", "err", err)
		} else {
			log.Info("mount ended cleanly")
		}
	}()
	return s.run(ctx, progress)
}

type super struct {
	plan   *Plan
	cfg    Config
	log    *slog.Logger
	layout Layout

	mu sync.Mutex
	st *State

	locks     []*diskLock
	ln        net.Listener
	sess      *session.Session
	fuse      FUSE
	unmounted atomic.Bool // the FUSE mount is gone
	// directFile is the disk FUSE reads file data from (FUSEOptions.Direct).
	directFile *os.File

	conns      sync.WaitGroup // control connections being answered
	finishOnce sync.Once
	stopOnce   sync.Once
	stopCh     chan struct{}
	waiters    []chan error
	finished   bool
}

func (s *super) setState(f func(*State)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s.st)
	if err := s.st.write(); err != nil {
		s.log.Warn("saving state", "err", err)
	}
}

func (s *super) state() *State {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := *s.st
	return &c
}

func (s *super) run(ctx context.Context, progress func(string)) (err error) {
	p := s.plan
	log := s.log
	log.Info("mount requested", "disk", p.Disk, "disks", strings.Join(p.Disks, ","), "raid", p.RAID, "vg", p.VG, "lv", p.LV, "partition", p.Partition, "fstype", p.FSType,
		"detected", p.DetectedType, "options", p.Options, "readonly", p.ReadOnly,
		"mountpoint", p.Mountpoint, "guest", p.Guest, "arch", p.Arch, "pid", os.Getpid())

	// Undo a partial start.
	var createdMP bool
	defer func() {
		if err != nil {
			s.finish(err, createdMP)
		}
	}()

	progress("locking")
	if len(p.Disks) == 0 {
		p.Disks, p.Formats = []string{p.Disk}, []string{"raw"}
	}
	locks, err := s.layout.lockDisks(p)
	if err != nil {
		return err
	}
	s.locks = locks
	key, _ := lockKey(p.Disk, p.Partition)
	var otherKeys []string
	for _, d := range p.Disks[1:] {
		k, _ := lockKey(d, 0)
		otherKeys = append(otherKeys, k)
	}

	if p.CreateMountpoint {
		if p.AutoMountpoint {
			if err := os.MkdirAll(filepath.Dir(p.Mountpoint), 0o755); err != nil {
				return fmt.Errorf("creating %s: %w", filepath.Dir(p.Mountpoint), err)
			}
		}
		err := os.Mkdir(p.Mountpoint, 0o755)
		if errors.Is(err, fs.ErrExist) && p.AutoMountpoint {
			// Taken since Prepare looked (another mount of the same label).
			dir, name := filepath.Split(p.Mountpoint)
			err = nil
			p.Mountpoint = filepath.Join(dir, uniqueName(name, func(n string) bool {
				e := os.Mkdir(filepath.Join(dir, n), 0o755)
				if errors.Is(e, fs.ErrExist) {
					return true
				}
				err = e
				return false
			}))
		}
		if err != nil {
			return fmt.Errorf("creating mount point: %w", err)
		}
		createdMP = true
	}
	s.setState(func(st *State) {
		st.Mountpoint = p.Mountpoint
		st.Disks = p.Disks
		st.Partition = p.Partition
		st.FSType = p.FSType
		if st.FSType == "" {
			st.FSType = p.DetectedType
		}
		st.Label = p.Label
		st.Options = p.Options
		st.Guest = p.Guest
		st.ReadOnly = p.ReadOnly
		st.SupervisorPID = os.Getpid()
		st.CreatedMountpoint = createdMP
		st.LockKey = key
		st.LockKeys = otherKeys
	})
	if s.cfg.OnState != nil {
		s.cfg.OnState(s.state())
	}

	ln, err := net.Listen("unix", s.st.Socket)
	if err != nil {
		return fmt.Errorf("opening the control socket: %w", err)
	}
	s.ln = ln
	go serveControl(ln, &s.conns, s.state, s.unmountRequest)

	// Boot and mount; an unmount request or a signal cancels it.
	startCtx, cancelStart := context.WithCancel(ctx)
	defer cancelStart()
	go func() {
		select {
		case <-s.stopCh:
			cancelStart()
		case <-startCtx.Done():
		}
	}()
	if err := s.start(startCtx, progress); err != nil {
		select {
		case <-s.stopCh:
			s.log.Info("stopped while starting", "err", err)
			err = errStoppedWhileStarting
		default:
		}
		return err
	}
	s.setState(func(st *State) { st.State = StateMounted })
	log.Info("mounted", "mountpoint", p.Mountpoint, "fstype", s.state().FSType, "vm_pid", s.state().VMPID)
	progress("ready")

	// Serve until something ends the mount.
	fuseDone := make(chan struct{})
	go func() { s.fuse.Wait(); s.unmounted.Store(true); close(fuseDone) }()
	vmDone := make(chan error, 1)
	go func() { vmDone <- s.sess.Machine().Wait(context.Background()) }()

	var reason error
	select {
	case <-ctx.Done():
		log.Info("signal: shutting down")
	case <-s.stopCh:
		log.Info("unmount requested")
	case <-fuseDone:
		log.Info("the FUSE mount was unmounted")
	case err := <-vmDone:
		if err == nil {
			err = errors.New("powered off")
		}
		reason = fmt.Errorf("the guest VM stopped unexpectedly: %w", err)
		log.Error("vm stopped", "err", err)
	}
	err = s.shutdown()
	if reason != nil {
		err = errors.Join(reason, err)
	}
	s.finish(err, createdMP)
	return err
}

// errStoppedWhileStarting ends a mount that an unmount request stopped
// while it was booting.
var errStoppedWhileStarting = errors.New("stopped while starting")

// start boots the guest, mounts, and serves FUSE.
func (s *super) start(ctx context.Context, progress func(string)) (err error) {
	p := s.plan
	var g *guests.Built
	if p.GuestDir != "" {
		g, err = guests.Load(p.GuestDir)
	} else {
		g, err = guests.Find(p.Guest, p.Arch)
	}
	if err != nil {
		return err
	}
	vmDir := filepath.Join(s.st.Dir, "vm")
	if err := mkdirPrivate(vmDir); err != nil {
		return err
	}
	mc := vmm.Config{
		Kernel:     g.Kernel,
		Initrd:     g.Initrd,
		Cmdline:    guestCmdline(p),
		Arch:       p.Arch,
		MemoryMiB:  p.MemoryMiB,
		CPUs:       p.CPUs,
		ConsoleLog: s.st.Console,
		StateDir:   vmDir,
	}
	var serials []string
	for i, d := range p.Disks {
		format := ""
		if i < len(p.Formats) {
			format = p.Formats[i]
		}
		serial := wire.DiskSerial(i)
		serials = append(serials, serial)
		mc.Disks = append(mc.Disks, vmm.Disk{Path: d, Format: format, ReadOnly: p.ReadOnly, Serial: serial})
	}
	// The passphrase requests, by disk; the last one declined says why
	// an unlock failed.
	var declined struct {
		disk, kind string
		attempt    int
		err        error
	}
	ask := func(ctx context.Context, device, kind string, attempt int) (string, error) {
		disk := device
		if i, ok := wire.ParseDiskSerial(device); ok && i < len(p.Disks) {
			disk = p.Disks[i]
		}
		declined.disk, declined.kind, declined.attempt, declined.err = disk, kind, attempt, nil
		if s.cfg.Passphrase == nil {
			declined.err = errors.New("no passphrase can be asked for")
			return "", declined.err
		}
		s.log.Info("passphrase needed", "disk", disk, "kind", kind, "attempt", attempt)
		pass, err := s.cfg.Passphrase(ctx, disk, kind, attempt)
		if err != nil {
			declined.err = err
			return "", err
		}
		return pass, nil
	}
	progress("booting")
	s.log.Info("booting", "driver", s.cfg.Driver.Name(), "kernel", g.Kernel, "initrd", g.Initrd, "disks", len(mc.Disks), "memory_mib", mc.MemoryMiB)
	sess, err := session.Start(ctx, session.Config{
		Driver:  s.cfg.Driver,
		Machine: mc,
		Mount: wire.MountRequest{
			Disks:     serials,
			Partition: p.Partition,
			FSType:    p.FSType,
			Options:   p.Options,
			ReadOnly:  p.ReadOnly,
			RAID:      p.RAID,
			VG:        p.VG,
			LV:        p.LV,
		},
		Logger: s.log,
		OnBooted: func(m vmm.Machine) {
			s.setState(func(st *State) { st.VMPID = m.PID() })
		},
		OnHello:    func(*wire.Message) { progress("mounting") },
		Passphrase: ask,
	})
	if err != nil {
		var ge *session.GuestError
		if errors.As(err, &ge) && ge.Step == wire.StepUnlock && declined.disk != "" {
			switch {
			case ge.Text == wire.ErrWrongPassphrase || (declined.err != nil && declined.attempt > 1):
				return fmt.Errorf("wrong passphrase for %s", declined.disk)
			case declined.err != nil:
				return fmt.Errorf("%s is encrypted (%s): %w", declined.disk, declined.kind, declined.err)
			}
		}
		return err
	}
	s.sess = sess
	if sess.Mounted != nil && sess.Mounted.FSType != "" {
		s.setState(func(st *State) { st.FSType = sess.Mounted.FSType })
	}
	conn, err := sess.DialNineP(ctx)
	if err != nil {
		return err
	}
	fsname := p.Disk
	if p.Partition > 0 {
		fsname = fmt.Sprintf("%s@%d", p.Disk, p.Partition)
	}
	if (len(p.Disks) > 1 || p.RAID || p.VG != "") && p.Source != "" {
		fsname = p.Source
	}
	direct := s.directRegion(sess.Mounted)
	f, err := s.cfg.Mount(ctx, conn, p.Mountpoint, FUSEOptions{
		ReadOnly: p.ReadOnly,
		FSName:   fsname,
		Owner:    p.Owner,
		Logger:   s.log.With("from", "fuse"),
		Direct:   direct,
	})
	if err != nil {
		conn.Close()
		if direct != nil {
			direct.File.Close()
		}
		return fmt.Errorf("mounting FUSE at %s: %w", p.Mountpoint, err)
	}
	if direct != nil {
		s.directFile = direct.File
	}
	s.fuse = f
	return nil
}

func guestCmdline(p *Plan) string {
	var parts []string
	if p.FSType != "" {
		// Load the filesystem's module while the host connects.
		parts = append(parts, wire.ParamModules+"="+p.FSType)
	}
	return strings.Join(parts, " ")
}

// unmountRequest is the control socket's unmount: it unmounts FUSE (failing
// when the mount point is busy), then has the main loop shut down and
// waits for it.
func (s *super) unmountRequest() error {
	s.mu.Lock()
	if s.finished {
		s.mu.Unlock()
		return errors.New("the mount is already gone")
	}
	w := make(chan error, 1)
	s.waiters = append(s.waiters, w)
	mounted := s.st.State == StateMounted
	s.mu.Unlock()
	if mounted && !s.unmounted.Load() {
		if err := s.fuse.Unmount(); err != nil {
			s.dropWaiter(w)
			return fmt.Errorf("unmounting %s: %w (close the files in use, or run qmount stop --force)", s.plan.Mountpoint, err)
		}
		s.unmounted.Store(true)
	}
	s.stopOnce.Do(func() { close(s.stopCh) })
	return <-w
}

func (s *super) dropWaiter(w chan error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, x := range s.waiters {
		if x == w {
			s.waiters = append(s.waiters[:i], s.waiters[i+1:]...)
			return
		}
	}
}

// shutdown is the clean end of a live mount.
func (s *super) shutdown() error {
	s.setState(func(st *State) { st.State = StateStopping })
	var errs []error
	if !s.unmounted.Load() {
		if err := s.fuse.Unmount(); err != nil {
			s.log.Warn("unmounting FUSE; detaching it", "err", err)
			if err := detach(s.plan.Mountpoint); err != nil {
				errs = append(errs, fmt.Errorf("unmounting %s: %w", s.plan.Mountpoint, err))
			}
		}
		s.unmounted.Store(true)
	}
	timeout := s.cfg.ShutdownTimeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	s.log.Info("shutting the guest down")
	if err := s.sess.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("shutting the guest down: %w", err))
	}
	return errors.Join(errs...)
}

// finish removes the state, socket, created mount point and lock, and
// answers unmount requests with err.
func (s *super) finish(err error, createdMP bool) {
	s.finishOnce.Do(func() { s.doFinish(err, createdMP) })
}

func (s *super) doFinish(err error, createdMP bool) {
	if s.sess != nil && err != nil && s.fuse == nil {
		// Failed after the guest mounted but before FUSE: stop the guest.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		s.sess.Shutdown(ctx)
		cancel()
	}
	if s.directFile != nil && s.unmounted.Load() {
		s.directFile.Close()
	}
	if createdMP {
		if rerr := os.Remove(s.plan.Mountpoint); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			s.log.Warn("removing the mount point", "err", rerr)
		}
	}
	s.mu.Lock()
	s.finished = true
	waiters := s.waiters
	s.waiters = nil
	s.mu.Unlock()
	if rerr := s.st.remove(); rerr != nil {
		s.log.Warn("removing state", "err", rerr)
	}
	for _, lk := range s.locks {
		lk.release()
	}
	if s.ln != nil {
		s.ln.Close()
	}
	answer := err
	if errors.Is(err, errStoppedWhileStarting) {
		answer = nil // what the unmount asked for
	}
	for _, w := range waiters {
		w <- answer
	}
	// Let the control connections write their answers before the process
	// ends (bounded: a client that sends nothing is cut off).
	done := make(chan struct{})
	go func() { s.conns.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
}

// teeHandler sends records to two handlers.
type teeHandler struct{ a, b slog.Handler }

func (t teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return t.a.Enabled(ctx, l) || t.b.Enabled(ctx, l)
}

func (t teeHandler) Handle(ctx context.Context, r slog.Record) error {
	var errs []error
	if t.a.Enabled(ctx, r.Level) {
		errs = append(errs, t.a.Handle(ctx, r.Clone()))
	}
	if t.b.Enabled(ctx, r.Level) {
		errs = append(errs, t.b.Handle(ctx, r.Clone()))
	}
	return errors.Join(errs...)
}

func (t teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return teeHandler{t.a.WithAttrs(as), t.b.WithAttrs(as)}
}

func (t teeHandler) WithGroup(n string) slog.Handler {
	return teeHandler{t.a.WithGroup(n), t.b.WithGroup(n)}
}
