package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/mdlayher/vsock"

	"github.com/qmount/qmount/internal/wire"
	"github.com/qmount/qmount/vmm"
)

// shutdownGrace is how long Shutdown waits for a power-off when ctx has
// no deadline, and quitGrace how long QMP quit may take before SIGKILL.
const (
	shutdownGrace = 10 * time.Second
	quitGrace     = 3 * time.Second
)

// machine is a running QEMU process.
type machine struct {
	log        *slog.Logger
	cmd        *exec.Cmd
	inv        *Invocation
	plan       Plan
	console    string
	stderrPath string
	started    time.Time

	mu             sync.Mutex
	qmp            *qmp
	dialled        map[string]bool
	killed         bool
	exited         bool
	shutdownReason string

	done chan struct{} // closed once the process is reaped and err set
	err  error
}

var _ vmm.Machine = (*machine)(nil)

// reap waits for QEMU, removes its sockets and records the result.
func (m *machine) reap() {
	werr := m.cmd.Wait()
	m.mu.Lock()
	m.exited = true
	killed, reason, q := m.killed, m.shutdownReason, m.qmp
	m.mu.Unlock()
	if q != nil {
		q.Close()
	}
	for _, s := range socketsOf(m.inv) {
		if err := os.Remove(s); err != nil && !errors.Is(err, os.ErrNotExist) {
			m.log.Warn("removing qemu socket", "path", s, "err", err)
		}
	}
	switch {
	case werr == nil:
		if p := m.panicLines(); p != "" {
			m.err = fmt.Errorf("guest kernel panicked:\n%s", p)
		}
	case killed:
		m.err = errors.New("qemu was killed")
	default:
		m.err = fmt.Errorf("qemu exited: %w%s", werr, m.diagnostics())
	}
	m.log.Debug("qemu exited", "pid", m.cmd.Process.Pid, "err", m.err, "reason", reason,
		"after", time.Since(m.started))
	close(m.done)
}

// connectQMP connects to the monitor, retrying until the socket exists,
// QEMU exits or ctx ends.
func (m *machine) connectQMP(ctx context.Context) (*qmp, error) {
	for {
		q, err := dialQMP(ctx, m.inv.QMP, m.event)
		if err == nil {
			m.mu.Lock()
			exited := m.exited
			if !exited {
				m.qmp = q
			}
			m.mu.Unlock()
			if exited {
				q.Close()
				return nil, errors.New("qemu exited during start")
			}
			return q, nil
		}
		select {
		case <-m.done:
			return nil, fmt.Errorf("qemu failed to start: %w", m.err)
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for qemu: %w", ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (m *machine) event(name string, data json.RawMessage) {
	m.log.Debug("qmp event", "event", name, "data", string(data))
	if name == "SHUTDOWN" {
		var d struct {
			Reason string `json:"reason"`
		}
		_ = json.Unmarshal(data, &d)
		m.mu.Lock()
		m.shutdownReason = d.Reason
		m.mu.Unlock()
	}
}

// Dial implements vmm.Machine.
func (m *machine) Dial(ctx context.Context, port wire.Port) (net.Conn, error) {
	switch m.plan.Transport {
	case TransportVsock:
		for {
			c, err := vsock.DialContext(ctx, m.plan.CID, port.Vsock, nil)
			if err == nil {
				return c, nil
			}
			select {
			case <-m.done:
				return nil, fmt.Errorf("dialling vsock port %d: machine has exited", port.Vsock)
			case <-ctx.Done():
				return nil, fmt.Errorf("dialling vsock port %d: %w (last: %v)", port.Vsock, ctx.Err(), err)
			case <-time.After(20 * time.Millisecond):
			}
		}
	default:
		path, ok := m.inv.Sockets[port.Name]
		if !ok {
			return nil, fmt.Errorf("dialling %s: no such virtio-serial port", port.Name)
		}
		m.mu.Lock()
		switch {
		case m.exited:
			m.mu.Unlock()
			return nil, fmt.Errorf("dialling %s: machine has exited", port.Name)
		case m.dialled[port.Name]:
			m.mu.Unlock()
			return nil, fmt.Errorf("dialling %s: port is already connected", port.Name)
		}
		m.dialled[port.Name] = true
		m.mu.Unlock()
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", path)
		if err != nil {
			m.mu.Lock()
			delete(m.dialled, port.Name)
			m.mu.Unlock()
			return nil, fmt.Errorf("dialling %s: %w", port.Name, err)
		}
		return c, nil
	}
}

// Wait implements vmm.Machine.
func (m *machine) Wait(ctx context.Context) error {
	select {
	case <-m.done:
		return m.err
	case <-ctx.Done():
		return fmt.Errorf("waiting for qemu: %w", ctx.Err())
	}
}

// Shutdown implements vmm.Machine: QMP system_powerdown, then at ctx's
// deadline (10 s when it has none) QMP quit, then SIGKILL. microvm guests
// have an ACPI power button (GED) but nothing in a minimal guest acts on
// it, so for them the control channel's shutdown message, which callers
// send first, is the clean path; quit still stops QEMU in order (its
// block layer flushed), unlike SIGKILL.
func (m *machine) Shutdown(ctx context.Context) error {
	select {
	case <-m.done:
		return m.err
	default:
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, shutdownGrace)
		defer cancel()
	}
	m.mu.Lock()
	q := m.qmp
	m.mu.Unlock()
	if q != nil {
		if _, err := q.Execute(ctx, "system_powerdown"); err != nil {
			m.log.Debug("qmp system_powerdown", "err", err)
		}
	}
	select {
	case <-m.done:
		return m.err
	case <-ctx.Done():
	}
	how := "quit"
	qctx, cancel := context.WithTimeout(context.Background(), quitGrace)
	defer cancel()
	if q != nil {
		_, _ = q.Execute(qctx, "quit") // QEMU may exit before it answers
	}
	select {
	case <-m.done:
	case <-qctx.Done():
		how = "SIGKILL"
		_ = m.Kill()
		<-m.done
	}
	return fmt.Errorf("shutting down: the guest did not power off in time (%w); stopped qemu with %s", ctx.Err(), how)
}

// Kill implements vmm.Machine.
func (m *machine) Kill() error {
	m.mu.Lock()
	if m.exited {
		m.mu.Unlock()
		return nil
	}
	m.killed = true
	m.mu.Unlock()
	// os.Process signals through a pidfd: never a reused pid.
	if err := m.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing qemu: %w", err)
	}
	return nil
}

// PID implements vmm.Machine.
func (m *machine) PID() int { return m.cmd.Process.Pid }

// diagnostics is QEMU's stderr and the end of the guest console, for
// errors.
func (m *machine) diagnostics() string {
	var b strings.Builder
	if s := m.stderrTail(); s != "" {
		fmt.Fprintf(&b, "; qemu said: %s", s)
	}
	if c := lastLines(tail(m.console, 4096), 15); c != "" {
		fmt.Fprintf(&b, "\nlast guest console lines:\n%s", c)
	}
	return b.String()
}

func (m *machine) stderrTail() string {
	return strings.TrimSpace(lastLines(tail(m.stderrPath, 4096), 10))
}

// panicLines returns the kernel's panic line and the lines before it (the
// oops or message that led to it), if the guest panicked: panic=-1 makes
// a panicking guest reset, which with -no-reboot is a normal exit.
func (m *machine) panicLines() string {
	t := tail(m.console, 16<<10)
	i := strings.LastIndex(t, "Kernel panic - not syncing")
	if i < 0 {
		return ""
	}
	line, _, _ := strings.Cut(t[i:], "\n")
	return lastLines(t[:i]+line, 12)
}

// tail returns up to n bytes from the end of a file.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(st.Size()-n, 0)
	b, _ := io.ReadAll(io.NewSectionReader(f, off, n))
	if off > 0 {
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
