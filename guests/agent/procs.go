package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
)

// children are the processes the agent starts itself. As PID 1 the guest
// also reaps orphans; the reaper leaves these alone, so that exec.Cmd.Wait
// gets their exit status. A process is registered under mu from before it
// is forked until it has been waited for, and the reaper holds mu while it
// reaps, so it never sees an unregistered child of ours.
var children = struct {
	mu   sync.Mutex
	pids map[int]bool
}{pids: map[int]bool{}}

// startChild starts cmd, registered as the agent's own.
func startChild(cmd *exec.Cmd) error {
	children.mu.Lock()
	defer children.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	children.pids[cmd.Process.Pid] = true
	return nil
}

// waitChild waits for a process started with startChild.
func waitChild(cmd *exec.Cmd) error {
	err := cmd.Wait()
	children.mu.Lock()
	delete(children.pids, cmd.Process.Pid)
	children.mu.Unlock()
	return err
}

// toolEnv is the environment of the storage tools: no udev in the guest,
// so device-mapper creates its nodes itself.
var toolEnv = []string{
	"PATH=/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/bin",
	"HOME=/root",
	"DM_DISABLE_UDEV=1",
	"LVM_SUPPRESS_FD_WARNINGS=1",
	"LC_ALL=C",
}

// ToolError is a guest tool that failed, with what it printed.
type ToolError struct {
	Tool   string
	Code   int // exit status; -1 if it did not exit normally
	Output string
	Err    error
}

func (e *ToolError) Error() string {
	out := strings.TrimSpace(e.Output)
	if out == "" {
		return fmt.Sprintf("%s: %v", e.Tool, e.Err)
	}
	return fmt.Sprintf("%s: %s (%v)", e.Tool, out, e.Err)
}

func (e *ToolError) Unwrap() error { return e.Err }

// runTool runs a guest tool with stdin (may be nil) and returns its
// combined output. The arguments are logged by callers, never stdin: that
// is where secrets go.
func runTool(ctx context.Context, stdin io.Reader, name string, args ...string) ([]byte, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		for _, dir := range []string{"/usr/sbin/", "/usr/bin/", "/sbin/", "/bin/"} {
			if p, err2 := exec.LookPath(dir + name); err2 == nil {
				path, err = p, nil
				break
			}
		}
		if err != nil {
			return nil, &ToolError{Tool: name, Code: -1, Err: fmt.Errorf("not in this guest (use a guest that ships it): %w", err)}
		}
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = toolEnv
	cmd.Stdin = stdin
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := startChild(cmd); err != nil {
		return nil, &ToolError{Tool: name, Code: -1, Err: err}
	}
	if err := waitChild(cmd); err != nil {
		code := -1
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		return out.Bytes(), &ToolError{Tool: name, Code: code, Output: out.String(), Err: err}
	}
	return out.Bytes(), nil
}
