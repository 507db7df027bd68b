package agent

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// startPTY starts cmd on a new pseudo-terminal of rows x cols, copying
// what it writes to out and giving ex a stdin that writes to it. The
// returned func waits until all output was copied.
func startPTY(cmd *exec.Cmd, rows, cols int, out io.Writer, ex *execution) (func(), error) {
	os.MkdirAll("/dev/pts", 0o755)
	if err := unix.Mount("devpts", "/dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "ptmxmode=0666,mode=0620"); err != nil && err != unix.EBUSY {
		return nil, fmt.Errorf("mounting devpts: %w", err)
	}
	ptmx, err := os.OpenFile("/dev/pts/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("opening a pseudo-terminal: %w", err)
	}
	fd := int(ptmx.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		ptmx.Close()
		return nil, fmt.Errorf("unlocking the pseudo-terminal: %w", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		ptmx.Close()
		return nil, fmt.Errorf("naming the pseudo-terminal: %w", err)
	}
	if rows > 0 && cols > 0 {
		unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: uint16(rows), Col: uint16(cols)})
	}
	tty, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		ptmx.Close()
		return nil, fmt.Errorf("opening the pseudo-terminal: %w", err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := startChild(cmd); err != nil {
		tty.Close()
		ptmx.Close()
		return nil, err
	}
	tty.Close()
	ex.stdin = ptmx
	copied := make(chan struct{})
	go func() {
		io.Copy(out, ptmx) // ends with EIO once the last holder of the tty exits
		close(copied)
	}()
	return func() { <-copied }, nil
}
