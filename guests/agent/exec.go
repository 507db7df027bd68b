package agent

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"

	"github.com/qmount/qmount/internal/wire"
)

// askPassphrase asks the host for a passphrase and waits for its unlock
// message. Shutdown while waiting aborts the mount and then the session.
func (s *session) askPassphrase(ctx context.Context, device, kind string, attempt int) (string, error) {
	s.send(&wire.Message{Type: wire.TypeNeedPassphrase, Device: device, Kind: kind, Attempt: attempt})
	for {
		select {
		case m := <-s.msgs:
			switch m.Type {
			case wire.TypeUnlock:
				if m.Abort {
					return "", errNoPassphrase
				}
				return m.Passphrase, nil
			case wire.TypeShutdown:
				s.shutdownAsked = true
				return "", errNoPassphrase
			default:
				s.a.log.Warn("unexpected control message while waiting for a passphrase", "type", m.Type)
			}
		case <-s.gone:
			return "", errors.New("control connection lost while waiting for a passphrase")
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

// execution is a command run for the host (qmount shell).
type execution struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser // nil once closed
	code  chan int       // receives the exit status once, after all output was sent
	mu    sync.Mutex
}

func (e *execution) kill() {
	if e.cmd.Process != nil {
		e.cmd.Process.Kill()
	}
}

// exited returns the channel the running command's status arrives on (a
// nil channel, never ready, when none runs).
func (s *session) exited() <-chan int {
	if s.ex == nil {
		return nil
	}
	return s.ex.code
}

// shellPath is where the agent installs busybox's applets for commands.
const shellPath = "/usr/local/bin"

// handleExec starts a command for the host; its output goes back as
// output messages and its end as an exited message.
func (s *session) handleExec(ctx context.Context, req *wire.ExecRequest) {
	a := s.a
	if s.ex != nil || s.m != nil {
		s.send(&wire.Message{Type: wire.TypeError, Step: "exec", Error: "busy: a command or a mount is running"})
		return
	}
	// Disks by serial, for scripts: /dev/disk/qmount/qmount0...
	for _, serial := range req.Disks {
		dev, err := a.cfg.Disks.Find(ctx, serial, 0)
		if err != nil {
			s.send(&wire.Message{Type: wire.TypeError, Step: "disk", Error: err.Error()})
			return
		}
		os.MkdirAll("/dev/disk/qmount", 0o755)
		os.Remove("/dev/disk/qmount/" + serial)
		os.Symlink(dev, "/dev/disk/qmount/"+serial)
	}
	installBusybox(ctx)
	prepareStorageTools()
	os.MkdirAll("/root", 0o755)
	a.loadStorageModules(ctx)
	if a.modules != nil {
		// A shell may mount anything: every filesystem module the guest
		// ships, and FUSE.
		for _, m := range append(a.info.AllFSModules(), "fuse") {
			a.modules.Load(ctx, m)
		}
	}
	path, err := exec.LookPath(req.Args[0])
	if err != nil {
		if p, err2 := exec.LookPath(filepath.Join(shellPath, filepath.Base(req.Args[0]))); err2 == nil {
			path, err = p, nil
		}
	}
	if err != nil {
		s.send(&wire.Message{Type: wire.TypeError, Step: "exec", Error: err.Error()})
		return
	}
	cmd := exec.Command(path, req.Args[1:]...)
	cmd.Env = append(toolEnv[:len(toolEnv):len(toolEnv)], "TERM=linux", "PS1=qmount# ", "SHELL=/bin/sh")
	cmd.Dir = "/"
	ex := &execution{cmd: cmd, code: make(chan int, 1)}
	out := &outputWriter{s: s}
	var started func()
	if req.TTY {
		started, err = startPTY(cmd, req.Rows, req.Cols, out, ex)
	} else {
		var stdin io.WriteCloser
		stdin, err = cmd.StdinPipe()
		if err == nil {
			ex.stdin = stdin
			cmd.Stdout, cmd.Stderr = out, out
			err = startChild(cmd)
			started = func() {}
		}
	}
	if err != nil {
		s.send(&wire.Message{Type: wire.TypeError, Step: "exec", Error: err.Error()})
		return
	}
	a.log.Info("running a command", "cmd", filepath.Base(path), "tty", req.TTY)
	s.ex = ex
	go func() {
		err := waitChild(cmd)
		started() // output copied to the end
		code := cmd.ProcessState.ExitCode()
		if err != nil && code < 0 {
			code = 128 + 9
		}
		ex.code <- code
	}()
}

// handleInput feeds the running command's stdin.
func (s *session) handleInput(m *wire.Message) {
	ex := s.ex
	if ex == nil {
		return
	}
	ex.mu.Lock()
	defer ex.mu.Unlock()
	if ex.stdin == nil {
		return
	}
	if len(m.Data) > 0 {
		if _, err := ex.stdin.Write(m.Data); err != nil {
			ex.stdin.Close()
			ex.stdin = nil
			return
		}
	}
	if m.EOF {
		ex.stdin.Close()
		ex.stdin = nil
	}
}

// outputWriter sends what a command writes as output messages.
type outputWriter struct{ s *session }

func (w *outputWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		c := min(len(p), wire.MaxDataBytes)
		w.s.send(&wire.Message{Type: wire.TypeOutput, Data: append([]byte(nil), p[:c]...)})
		p = p[c:]
	}
	return n, nil
}

// installBusybox links busybox's applets into shellPath once (the real
// tools the guest ships come first in PATH).
var busyboxOnce sync.Once

func installBusybox(ctx context.Context) {
	busyboxOnce.Do(func() {
		if !haveTool("busybox") {
			return
		}
		os.MkdirAll(shellPath, 0o755)
		runTool(ctx, nil, "busybox", "--install", "-s", shellPath)
		if _, err := os.Stat("/bin/sh"); err != nil {
			os.MkdirAll("/bin", 0o755)
			os.Symlink(filepath.Join(shellPath, "sh"), "/bin/sh")
		}
	})
}
