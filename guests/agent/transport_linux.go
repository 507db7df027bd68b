package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"

	"github.com/qmount/qmount/internal/wire"
)

// Where the guest finds its transports.
const (
	sysRoot   = "/sys"
	devRoot   = "/dev"
	vsockNode = "/dev/vsock"
)

// portAddr names a virtio-serial port.
type portAddr string

func (a portAddr) Network() string { return "virtio-serial" }
func (a portAddr) String() string  { return string(a) }

// PortListener turns a virtio-serial port into a listener. A port is one
// byte stream that the host opens and closes: Accept waits until the host
// has sent data (reading a port the host has not opened returns EOF at
// once, so it polls), and returns a connection over the port. The next
// Accept waits until that connection is closed, then for the host's next
// connection. Close closes the port.
type PortListener struct {
	f      *os.File
	name   string
	mu     sync.Mutex
	busy   chan struct{} // closed when the current connection is closed
	closed chan struct{}
	once   sync.Once
}

// NewPortListener listens on an open port (or any pollable stream file).
func NewPortListener(f *os.File, name string) *PortListener {
	return &PortListener{f: f, name: name, closed: make(chan struct{})}
}

// hupPoll is how often Accept looks again while the host is not connected.
const hupPoll = 3 * time.Millisecond

// Accept implements net.Listener.
func (l *PortListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.busy != nil {
		select {
		case <-l.busy:
		case <-l.closed:
			return nil, net.ErrClosed
		}
	}
	rc, err := l.f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("polling port %s: %w", l.name, err)
	}
	for {
		select {
		case <-l.closed:
			return nil, net.ErrClosed
		default:
		}
		var revents int16
		var perr error
		cerr := rc.Control(func(fd uintptr) {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			_, perr = unix.Poll(fds, 100)
			revents = fds[0].Revents
		})
		if cerr != nil {
			return nil, net.ErrClosed
		}
		if perr != nil && !errors.Is(perr, unix.EINTR) {
			return nil, fmt.Errorf("polling port %s: %w", l.name, perr)
		}
		// A port whose host side is closed polls as POLLHUP (and POLLIN:
		// a read would not block, it returns EOF).
		if revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0 {
			time.Sleep(hupPoll)
			continue
		}
		if revents&unix.POLLIN != 0 {
			break
		}
	}
	l.f.SetReadDeadline(time.Time{}) // undo the last connection's Close
	busy := make(chan struct{})
	l.busy = busy
	return &portConn{l: l, release: sync.OnceFunc(func() { close(busy) })}, nil
}

// Close implements net.Listener.
func (l *PortListener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.closed)
		err = l.f.Close()
	})
	return err
}

// Addr implements net.Listener.
func (l *PortListener) Addr() net.Addr { return portAddr(l.name) }

// portConn is one host connection over a port. Closing it leaves the port
// open for the next one.
type portConn struct {
	l       *PortListener
	release func()
}

func (c *portConn) Read(p []byte) (int, error)  { return c.l.f.Read(p) }
func (c *portConn) Write(p []byte) (int, error) { return c.l.f.Write(p) }

func (c *portConn) Close() error {
	c.l.f.SetReadDeadline(time.Now()) // wake a blocked reader
	c.release()
	return nil
}

func (c *portConn) LocalAddr() net.Addr                { return portAddr(c.l.name) }
func (c *portConn) RemoteAddr() net.Addr               { return portAddr("host") }
func (c *portConn) SetDeadline(t time.Time) error      { return c.l.f.SetDeadline(t) }
func (c *portConn) SetReadDeadline(t time.Time) error  { return c.l.f.SetReadDeadline(t) }
func (c *portConn) SetWriteDeadline(t time.Time) error { return c.l.f.SetWriteDeadline(t) }

// openPort opens the virtio-serial port called name, if the host attached
// it.
func openPort(name string) (*os.File, bool, error) {
	ports, err := FindPorts(sysRoot, devRoot)
	if err != nil {
		return nil, false, err
	}
	p, ok := ports[name]
	if !ok {
		return nil, false, nil
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return nil, false, fmt.Errorf("opening port %s (%s): %w", name, p, err)
	}
	return f, true, nil
}

// Control is the control connection the host opened first.
type Control struct {
	Conn      io.ReadWriteCloser
	HelloSent bool   // hello was written to find out the host is there
	Via       string // "virtio-serial" or "vsock"
}

// ConnectControl waits up to wait for the host's control connection, on
// the virtio-serial port qmount.ctl (found by name in sysfs; hello is
// written on it, which blocks until the host side opens) or on vsock
// (listening on the control port when /dev/vsock exists). The first
// connection wins.
func ConnectControl(ctx context.Context, log *slog.Logger, hello *wire.Message, wait time.Duration) (*Control, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	won := make(chan *Control, 2)
	var vl *vsock.Listener
	defer func() {
		if vl != nil {
			vl.Close()
		}
	}()
	virtio, vsockUp := false, false
	interval := 2 * time.Millisecond
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case c := <-won:
			if c.Via == "vsock" {
				vl = nil // keep nothing else listening; the conn stays
			}
			return c, nil
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the host's control connection: %w", ctx.Err())
		case <-t.C:
		}
		if !virtio {
			f, ok, err := openPort(wire.ControlPort.Name)
			if err != nil {
				log.Warn("control port", "err", err)
			}
			if ok {
				virtio = true
				log.Debug("control port found; writing hello")
				go func() {
					if err := wire.NewEncoder(f).Encode(hello); err != nil {
						log.Warn("writing hello on the control port", "err", err)
						return
					}
					won <- &Control{Conn: f, HelloSent: true, Via: "virtio-serial"}
				}()
			}
		}
		if !vsockUp {
			if _, err := os.Stat(vsockNode); err == nil {
				l, err := vsock.Listen(wire.ControlPort.Vsock, nil)
				if err != nil {
					log.Warn("listening on vsock", "port", wire.ControlPort.Vsock, "err", err)
				} else {
					vsockUp, vl = true, l
					go func() {
						c, err := l.Accept()
						if err != nil {
							return
						}
						won <- &Control{Conn: c, Via: "vsock"}
					}()
				}
			}
		}
		if !virtio || !vsockUp {
			t.Reset(interval)
			if interval < 50*time.Millisecond {
				interval *= 2
			}
		}
	}
}

// NinePListener listens for the host's 9P connections on the
// virtio-serial port qmount.9p and, when /dev/vsock exists, on the vsock
// 9P port.
func NinePListener() (net.Listener, error) {
	var ls []net.Listener
	f, ok, err := openPort(wire.NinePPort.Name)
	if err != nil {
		return nil, err
	}
	if ok {
		ls = append(ls, NewPortListener(f, wire.NinePPort.Name))
	}
	if _, err := os.Stat(vsockNode); err == nil {
		l, err := vsock.Listen(wire.NinePPort.Vsock, nil)
		if err != nil && len(ls) == 0 {
			return nil, fmt.Errorf("listening on vsock port %d: %w", wire.NinePPort.Vsock, err)
		}
		if err == nil {
			ls = append(ls, l)
		}
	}
	if len(ls) == 0 {
		return nil, errors.New("no 9P transport: neither port " + wire.NinePPort.Name + " nor " + vsockNode)
	}
	return MultiListener(ls...)
}
