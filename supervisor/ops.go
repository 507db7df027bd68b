package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Status asks a live supervisor for its state; for a stale mount (or a
// supervisor that does not answer) it returns st as read from disk.
func (l Layout) Status(ctx context.Context, st *State) *State {
	if st.State == StateStale {
		return st
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := call(ctx, st.Socket, request{Op: opStatus})
	if err != nil || resp.State == nil {
		return st
	}
	resp.State.Dir = st.Dir
	return resp.State
}

// Unmount asks the supervisor of st to unmount and shut down cleanly, and
// waits until it has exited.
func (l Layout) Unmount(ctx context.Context, st *State) error {
	if st.State == StateStale {
		return fmt.Errorf("the supervisor of %s is gone: run qmount stop %s", st.Mountpoint, quoteArg(st.Mountpoint))
	}
	if _, err := call(ctx, st.Socket, request{Op: opUnmount}); err != nil {
		if !processAlive(st.SupervisorPID) {
			if _, serr := os.Stat(st.Dir); errors.Is(serr, os.ErrNotExist) {
				return nil // it finished just as we asked
			}
		}
		return err
	}
	return waitGone(ctx, st.SupervisorPID, 30*time.Second)
}

// waitGone waits for pid to exit.
func waitGone(ctx context.Context, pid int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d is still running after %v", pid, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// Stop ends the mount st whatever its condition: a live supervisor is asked
// to unmount (unless force), then sent SIGTERM (it detaches a busy mount
// point and shuts the guest down), then killed; what a dead supervisor
// left behind is cleaned: the VM (after checking the process really is
// this mount's hypervisor), a stale FUSE mount (lazily unmounted), the
// mount point qmount created, and the state.
func (l Layout) Stop(ctx context.Context, st *State, force bool) error {
	pid := st.SupervisorPID
	if processAlive(pid) {
		if !force {
			uctx, cancel := context.WithTimeout(ctx, 90*time.Second)
			err := l.Unmount(uctx, st)
			cancel()
			if err == nil {
				return nil
			}
		}
		if processAlive(pid) {
			syscall.Kill(pid, syscall.SIGTERM)
			grace := 60 * time.Second
			if force {
				grace = 10 * time.Second
			}
			if waitGone(ctx, pid, grace) != nil {
				syscall.Kill(pid, syscall.SIGKILL)
				waitGone(ctx, pid, 5*time.Second)
			}
		}
		if _, err := os.Stat(st.Dir); errors.Is(err, os.ErrNotExist) {
			return nil // the supervisor cleaned up itself
		}
	}
	return l.clean(ctx, st, force)
}

// clean removes what a dead supervisor left behind.
func (l Layout) clean(ctx context.Context, st *State, force bool) error {
	var errs []error
	if vm := st.VMPID; vm > 0 && processAlive(vm) && isOurVM(vm, st) {
		// The guest syncs, unmounts and powers off when its control
		// connection drops: give it the time to do so before killing it.
		grace := 15 * time.Second
		if force {
			grace = 3 * time.Second
		}
		if waitGone(ctx, vm, grace) != nil {
			syscall.Kill(vm, syscall.SIGKILL)
			if err := waitGone(ctx, vm, 5*time.Second); err != nil {
				errs = append(errs, fmt.Errorf("stopping the VM: %w", err))
			}
		}
	}
	if st.Mountpoint != "" && isMounted(st.Mountpoint) {
		if err := detach(st.Mountpoint); err != nil {
			errs = append(errs, err)
		}
	}
	if st.CreatedMountpoint && st.Mountpoint != "" {
		if err := os.Remove(st.Mountpoint); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("removing the mount point: %w", err))
		}
	}
	if err := st.remove(); err != nil {
		errs = append(errs, err)
	}
	for _, key := range append([]string{st.LockKey}, st.LockKeys...) {
		if key == "" || strings.ContainsAny(key, "/\\") {
			continue
		}
		path := filepath.Join(l.locksDir(), key+".lock")
		if f, err := os.OpenFile(path, os.O_RDWR, 0); err == nil {
			if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
				os.Remove(path)
			}
			f.Close()
		}
	}
	return errors.Join(errs...)
}

// isOurVM checks that pid is a hypervisor process of this mount: its
// command line names one of the mount's files.
func isOurVM(pid int, st *State) bool {
	args, err := processCmdline(pid)
	if err != nil {
		return false
	}
	return slices.ContainsFunc(args, func(a string) bool {
		return strings.Contains(a, st.Dir+string(filepath.Separator)) || (st.Console != "" && strings.Contains(a, st.Console))
	})
}

// Detach lazily unmounts a (possibly stale) FUSE mount point.
func Detach(mountpoint string) error { return detach(mountpoint) }
