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
	shutOnce sync.Once
	shutErr  error
}

// Start boots the guest, asks it to mount cfg.Mount and waits until the
// mount is served or has failed. On failure nothing is left running and the
// error is a *GuestError when the guest said why.
func Start(ctx context.Context, cfg Config) (_ *Session, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	timeout := cfg.BootTimeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	m, err := cfg.Driver.Start(ctx, cfg.Machine)
	if err != nil {
		return nil, fmt.Errorf("starting vm: %w", err)
	}
	s := &Session{log: log, machine: m, bye: make(chan struct{}), ctlDone: make(chan struct{})}
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
			return nil, fmt.Errorf("%s: %w%s", step, ctx.Err(), s.consoleTail(cfg.Machine.ConsoleLog))
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

	mr := cfg.Mount
	if err := s.send(&wire.Message{Type: wire.TypeMount, Mount: &mr}); err != nil {
		return nil, err
	}
	res, err := next("waiting for the guest to mount")
	if err != nil {
		return nil, err
	}
	switch res.Type {
	case wire.TypeMounted:
		s.Mounted = res
		return s, nil
	case wire.TypeError:
		return nil, &GuestError{Step: res.Step, Text: res.Error}
	default:
		return nil, fmt.Errorf("unexpected guest message %q while mounting", res.Type)
	}
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
