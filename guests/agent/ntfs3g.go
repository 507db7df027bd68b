package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/qmount/qmount/internal/wire"
)

// haveTool reports whether the guest ships a program.
func haveTool(name string) bool {
	_, err := exec.LookPath(name)
	if err == nil {
		return true
	}
	for _, dir := range []string{"/usr/sbin/", "/usr/bin/", "/sbin/", "/bin/"} {
		if _, err := os.Stat(dir + name); err == nil {
			return true
		}
	}
	return false
}

// hasDriver reports whether the kernel can mount fstype, loading its
// module if the guest has one.
func (a *Agent) hasDriver(ctx context.Context, fstype string) bool {
	if a.modules != nil {
		a.modules.Load(ctx, a.info.ModulesFor(fstype)...) // failure: see below
	}
	all, err := a.sys.filesystems()
	return err == nil && slices.Contains(all, fstype)
}

// fuseMount is a FUSE daemon serving a mount (ntfs-3g), run in the
// foreground as the agent's own child.
type fuseMount struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	err  error
}

// fuseWait bounds how long teardown waits for the FUSE daemon to write
// back and exit after the unmount.
const fuseWait = 30 * time.Second

// wait waits for the daemon to exit after the unmount.
func (f *fuseMount) wait() error {
	select {
	case <-f.done:
	case <-time.After(fuseWait):
		f.cmd.Process.Kill()
		<-f.done
		return fmt.Errorf("ntfs-3g did not exit after the unmount; killed")
	}
	if f.err != nil {
		return &ToolError{Tool: "ntfs-3g", Code: -1, Output: f.out.String(), Err: f.err}
	}
	return nil
}

// lockedBuffer is a bytes.Buffer safe for a writer and a reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// mountNTFS3G mounts dev with the ntfs-3g FUSE driver. ntfs-3g mounts a
// hibernated (or fast-started) Windows volume read-only rather than
// refusing it; the agent says so.
func (a *Agent) mountNTFS3G(ctx context.Context, dev string, req *wire.MountRequest) (*mounted, error) {
	if a.modules != nil {
		if err := a.modules.Load(ctx, "fuse"); err != nil {
			return nil, &stepError{"modules", fmt.Errorf("loading fuse for ntfs-3g: %w", err)}
		}
	}
	if err := os.MkdirAll(a.cfg.MountDir, 0o755); err != nil {
		return nil, &stepError{"mount", fmt.Errorf("creating mount point: %w", err)}
	}
	opts := []string{"no_detach"}
	if req.ReadOnly {
		opts = append(opts, "ro")
		if err := setBlockReadOnly(dev); err != nil {
			return nil, &stepError{"mount", err}
		}
	}
	for _, o := range strings.Split(req.Options, ",") {
		if o = strings.TrimSpace(o); o != "" && o != "no_detach" {
			opts = append(opts, o)
		}
	}
	path, err := exec.LookPath("ntfs-3g")
	if err != nil {
		path = "/usr/bin/ntfs-3g"
	}
	f := &fuseMount{out: &lockedBuffer{}, done: make(chan struct{})}
	f.cmd = exec.Command(path, "-o", strings.Join(opts, ","), dev, a.cfg.MountDir)
	f.cmd.Env = toolEnv
	f.cmd.Stdout, f.cmd.Stderr = f.out, f.out
	a.log.Info("starting ntfs-3g", "dev", dev, "options", strings.Join(opts, ","))
	if err := startChild(f.cmd); err != nil {
		return nil, &stepError{"mount", fmt.Errorf("starting ntfs-3g: %w", err)}
	}
	go func() { f.err = waitChild(f.cmd); close(f.done) }()
	for !isFUSEMount(a.cfg.MountDir) {
		select {
		case <-f.done:
			text := strings.TrimSpace(f.out.String())
			if text == "" && f.err != nil {
				text = f.err.Error()
			}
			return nil, &stepError{"mount", errors.New("ntfs-3g: " + text)}
		case <-ctx.Done():
			f.cmd.Process.Kill()
			<-f.done
			return nil, &stepError{"mount", fmt.Errorf("ntfs-3g: %w", ctx.Err())}
		case <-time.After(20 * time.Millisecond):
		}
	}
	ro := a.sys.readOnly(a.cfg.MountDir)
	if ro && !req.ReadOnly {
		a.log.Warn("ntfs-3g mounted the volume read-only (Windows hibernated or fast-started it; boot Windows and shut it down fully to write)",
			"ntfs-3g", strings.TrimSpace(f.out.String()))
	}
	a.log.Info("mounted", "dev", dev, "fstype", "ntfs-3g", "dir", a.cfg.MountDir, "readonly", ro)
	return &mounted{dir: a.cfg.MountDir, fstype: "ntfs-3g", ro: ro, conns: map[io.Closer]bool{}, fuse: f}, nil
}
