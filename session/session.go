// Package session runs one guest for one mount on the host side: it boots
// the VM through a vmm.Driver, speaks the control protocol (hello, mount,
// mounted/error, shutdown, bye) and hands out the 9P stream the FUSE client
// serves from. It is what `qmount mount`'s supervisor, `qmount shell` and
// the end-to-end tests build on.
package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qmount/qmount/internal/wire"
	"github.com/qmount/qmount/vmm"
)

// Config describes a session.
type Config struct {
	Driver  vmm.Driver
	Machine vmm.Config
	// Mount is sent to the guest once it says hello.
	Mount wire.MountRequest
	// BootTimeout bounds boot + mount (default 2 minutes: TCG is slow).
	BootTimeout time.Duration
	Logger      *slog.Logger
	// OnBooted, if set, is called once the VM runs, before the guest says
	// hello (the supervisor records the hypervisor's pid and reports
	// progress). It must not block.
	OnBooted func(vmm.Machine)
	// OnHello, if set, is called with the guest's hello, before the mount
	// request is sent. It must not block.
	OnHello func(*wire.Message)
	// Passphrase, if set, is asked for the passphrase of an encrypted
	// container the guest found on device (a disk serial, e.g. "qmount0";
	// kind is "LUKS1", "LUKS2" or "BitLocker"), attempt counting from 1
	// (more than 1 after a wrong one). An error declines: the mount then
	// fails at step "unlock". Without it, encrypted disks fail to mount.
	// The boot timeout does not run while it is called.
	Passphrase func(ctx context.Context, device, kind string, attempt int) (string, error)
}

// GuestError is a failure the guest reported, with its own text (e.g. the
// kernel's "EXT4-fs (vda): VFS: Can't find ext4 filesystem").
type GuestError struct {
	Step string
	Text string
}

func (e *GuestError) Error() string {
	if e.Step == "" {
		return e.Text
	}
	return e.Step + ": " + e.Text
}

// Session is a running guest with its filesystem mounted. Methods are safe
// for concurrent use.
type Session struct {
	log     *slog.Logger
	machine vmm.Machine
	ctl     net.Conn
	enc     *wire.Encoder
	encMu   sync.Mutex

	// Hello and Mounted are the guest's messages.
	Hello   *wire.Message
	Mounted *wire.Message

	bye      chan struct{}
	ctlDone  chan struct{}
	output   io.Writer // where output messages go (Exec)
	shutOnce sync.Once
	shutErr  error
}

// Start boots the guest, asks it to mount cfg.Mount and waits until the
// mount is served or has failed. On failure nothing is left running and the
// error is a *GuestError when the guest said why.
func Start(ctx context.Context, cfg Config) (_ *Session, err error) {
	b, err := boot(ctx, cfg, nil)
	if err != nil {
		return nil, err
	}
	s := b.s
	defer func() {
		if err != nil {
			s.kill()
		}
	}()
	defer b.stop()
	mr := cfg.Mount
	if err := s.send(&wire.Message{Type: wire.TypeMount, Mount: &mr}); err != nil {
		return nil, err
	}
	for {
		res, err := b.next("waiting for the guest to mount")
		if err != nil {
			return nil, err
		}
		switch res.Type {
		case wire.TypeMounted:
			s.Mounted = res
			return s, nil
		case wire.TypeError:
			return nil, &GuestError{Step: res.Step, Text: res.Error}
		case wire.TypeNeedPassphrase:
			if err := b.unlock(ctx, cfg, res); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("unexpected guest message %q while mounting", res.Type)
		}
	}
}

// unlock answers a need_passphrase message, with the boot timeout paused.
func (b *booting) unlock(ctx context.Context, cfg Config, req *wire.Message) error {
	msg := &wire.Message{Type: wire.TypeUnlock, Abort: true}
	if cfg.Passphrase != nil {
		b.timer.Stop()
		pass, err := cfg.Passphrase(ctx, req.Device, req.Kind, req.Attempt)
		b.timer.Reset(b.timeout)
		if err == nil && pass != "" {
			msg = &wire.Message{Type: wire.TypeUnlock, Passphrase: pass}
		} else if err != nil {
			b.s.log.Info("no passphrase", "device", req.Device, "err", err)
		}
	}
	if err := b.s.send(msg); err != nil {
		return fmt.Errorf("sending the passphrase: %w", err)
	}
	return nil
}

// Exec boots a guest with cfg's disks (cfg.Mount is not used), runs
// req in it with stdin and stdout connected, shuts the guest down and
// returns the command's exit status. A nil stdin gives the command an
// empty one. With req.TTY, stdin and stdout are a terminal's (in raw
// mode); else stdout gets the command's stdout and stderr.
func Exec(ctx context.Context, cfg Config, req wire.ExecRequest, stdin io.Reader, stdout io.Writer) (code int, err error) {
	b, err := boot(ctx, cfg, stdout)
	if err != nil {
		return -1, err
	}
	s := b.s
	defer func() {
		if err != nil {
			s.kill()
		}
	}()
	b.timer.Stop() // a command may run as long as it likes
	defer b.stop()
	if err := s.send(&wire.Message{Type: wire.TypeExec, Exec: &req}); err != nil {
		return -1, err
	}
	if stdin != nil {
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, rerr := stdin.Read(buf)
				if n > 0 {
					if s.send(&wire.Message{Type: wire.TypeInput, Data: append([]byte(nil), buf[:n]...)}) != nil {
						return
					}
				}
				if rerr != nil {
					s.send(&wire.Message{Type: wire.TypeInput, EOF: true})
					return
				}
			}
		}()
	} else {
		s.send(&wire.Message{Type: wire.TypeInput, EOF: true})
	}
	for {
		res, err := b.next("running the command")
		if err != nil {
			return -1, err
		}
		switch res.Type {
		case wire.TypeExited:
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if err := s.Shutdown(sctx); err != nil {
				s.log.Warn("shutting the guest down", "err", err)
			}
			return res.Code, nil
		case wire.TypeError:
			return -1, &GuestError{Step: res.Step, Text: res.Error}
		default:
			s.log.Warn("unexpected guest message while running a command", "type", res.Type)
		}
	}
}

// booting is a guest between boot and its answer to the first request.
type booting struct {
	s       *Session
	next    func(step string) (*wire.Message, error)
	timer   *time.Timer
	timeout time.Duration
	stop    func()
}

// boot starts the VM and waits for the guest's hello. Output messages
// go to output.
func boot(ctx context.Context, cfg Config, output io.Writer) (_ *booting, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	timeout := cfg.BootTimeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithCancel(ctx)
	var fired atomic.Bool
	timer := time.AfterFunc(timeout, func() { fired.Store(true); cancel() })
	defer func() {
		if err != nil {
			timer.Stop()
			cancel()
		}
	}()

	m, err := cfg.Driver.Start(ctx, cfg.Machine)
	if err != nil {
		return nil, fmt.Errorf("starting vm: %w", err)
	}
	s := &Session{log: log, machine: m, bye: make(chan struct{}), ctlDone: make(chan struct{}), output: output}
	defer func() {
		if err != nil {
			s.kill()
		}
	}()
	if cfg.OnBooted != nil {
		cfg.OnBooted(m)
	}

	// Watch for the VM dying during boot, so we never wait for a dead guest.
	exited := make(chan error, 1)
	go func() { exited <- m.Wait(context.Background()) }()

	ctl, err := m.Dial(ctx, wire.ControlPort)
	if err != nil {
		return nil, fmt.Errorf("connecting to the guest's control port: %w", err)
	}
	s.ctl = ctl
	s.enc = wire.NewEncoder(ctl)
	dec := wire.NewDecoder(ctl)

	msgs := make(chan *wire.Message, 16)
	readErr := make(chan error, 1)
	go func() {
		defer close(s.ctlDone)
		for {
			msg, err := dec.Decode()
			if err != nil {
				readErr <- err
				return
			}
			if msg.Type == wire.TypeLog {
				s.logGuest(msg)
				continue
			}
			if msg.Type == wire.TypeBye {
				close(s.bye)
				continue
			}
			if msg.Type == wire.TypeOutput {
				if s.output != nil {
					s.output.Write(msg.Data)
				}
				continue
			}
			select {
			case msgs <- msg:
			default:
				log.Warn("guest message dropped", "type", msg.Type)
			}
		}
	}()

	next := func(step string) (*wire.Message, error) {
		select {
		case msg := <-msgs:
			return msg, nil
		case err := <-readErr:
			if errors.Is(err, io.EOF) {
				err = errors.New("the guest closed the control connection")
			}
			return nil, fmt.Errorf("%s: %w%s", step, err, s.consoleTail(cfg.Machine.ConsoleLog))
		case err := <-exited:
			if err == nil {
				err = errors.New("exited")
			}
			return nil, fmt.Errorf("%s: the vm stopped: %w%s", step, err, s.consoleTail(cfg.Machine.ConsoleLog))
		case <-ctx.Done():
			err := ctx.Err()
			if fired.Load() {
				err = fmt.Errorf("timed out after %v", timeout)
			}
			return nil, fmt.Errorf("%s: %w%s", step, err, s.consoleTail(cfg.Machine.ConsoleLog))
		}
	}

	hello, err := next("waiting for the guest's hello")
	if err != nil {
		return nil, err
	}
	if hello.Type != wire.TypeHello {
		return nil, fmt.Errorf("guest spoke %q before hello", hello.Type)
	}
	s.Hello = hello
	if cfg.OnHello != nil {
		cfg.OnHello(hello)
	}
	log.Debug("guest hello", "kernel", hello.Kernel, "arch", hello.Arch)

	return &booting{s: s, next: next, timer: timer, timeout: timeout, stop: func() { timer.Stop(); cancel() }}, nil
}

// DialNineP opens the 9P stream to the guest's server.
func (s *Session) DialNineP(ctx context.Context) (net.Conn, error) {
	c, err := s.machine.Dial(ctx, wire.NinePPort)
	if err != nil {
		return nil, fmt.Errorf("connecting to the guest's 9p port: %w", err)
	}
	return c, nil
}

// Machine is the running VM.
func (s *Session) Machine() vmm.Machine { return s.machine }

// Shutdown asks the guest to sync, unmount and power off, and waits for the
// VM to exit; at ctx's deadline the VM is killed. The result is the same
// for every caller.
func (s *Session) Shutdown(ctx context.Context) error {
	s.shutOnce.Do(func() {
		var errs []error
		if err := s.send(&wire.Message{Type: wire.TypeShutdown}); err != nil {
			errs = append(errs, err)
		} else {
			select {
			case <-s.bye:
			case <-s.ctlDone:
				errs = append(errs, errors.New("the guest closed the control connection without bye"))
			case <-ctx.Done():
				errs = append(errs, fmt.Errorf("waiting for the guest to unmount: %w", ctx.Err()))
			}
		}
		if err := s.machine.Wait(ctx); err != nil {
			errs = append(errs, fmt.Errorf("waiting for the vm to stop: %w", err))
			if kerr := s.machine.Kill(); kerr != nil {
				errs = append(errs, kerr)
			}
		}
		if s.ctl != nil {
			s.ctl.Close()
		}
		s.shutErr = errors.Join(errs...)
	})
	return s.shutErr
}

func (s *Session) kill() {
	if s.ctl != nil {
		s.ctl.Close()
	}
	s.machine.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.machine.Wait(ctx)
}

func (s *Session) send(m *wire.Message) error {
	s.encMu.Lock()
	defer s.encMu.Unlock()
	return s.enc.Encode(m)
}

func (s *Session) logGuest(m *wire.Message) {
	level := slog.LevelInfo
	switch m.Level {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	s.log.Log(context.Background(), level, m.Msg, "from", "guest")
}

// consoleTail returns the last lines of the guest console, to explain a
// guest that died or never answered.
func (s *Session) consoleTail(path string) string {
	if path == "" {
		return ""
	}
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return "\nguest console (last lines):\n  " + strings.Join(lines, "\n  ")
}
