package agent

import (
	"os"
	"os/signal"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// reap waits for orphaned children: PID 1 inherits them all. It leaves the
// agent's own children (startChild) to their exec.Cmd.Wait.
func reap() {
	ch := make(chan os.Signal, 16)
	signal.Notify(ch, unix.SIGCHLD)
	// A zombie of ours that blocked the loop below is waited for soon
	// after by its Wait, which raises no SIGCHLD: poll now and then too.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ch:
		case <-tick.C:
		}
		reapOrphans()
	}
}

// reapOrphans reaps every zombie child that is not the agent's own.
func reapOrphans() {
	children.mu.Lock()
	defer children.mu.Unlock()
	for {
		var info unix.Siginfo
		// Peek (WNOWAIT) at a waitable child before reaping it.
		if err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil); err != nil {
			return
		}
		pid := siginfoPid(&info)
		if pid <= 0 || children.pids[pid] {
			return
		}
		var ws unix.WaitStatus
		if p, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); p <= 0 || err != nil {
			return
		}
	}
}

// siginfoPid returns si_pid: after three int32s (signo, errno, code) and
// padding to 8 bytes on 64-bit, 4 bytes on 32-bit architectures.
func siginfoPid(info *unix.Siginfo) int {
	off := uintptr(12)
	if unsafe.Sizeof(uintptr(0)) == 8 {
		off = 16
	}
	return int(*(*int32)(unsafe.Add(unsafe.Pointer(info), off)))
}

// fuseSuperMagic is statfs f_type of a FUSE mount.
const fuseSuperMagic = 0x65735546

// isFUSEMount reports whether dir is the root of a FUSE mount.
func isFUSEMount(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == fuseSuperMagic
}
