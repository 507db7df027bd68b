package supervisor

import (
	"errors"
	"io"
	"os"
	"syscall"
)

// processAlive reports whether pid names a running process (an exited
// process not yet reaped does not count).
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	if err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	return !processZombie(pid)
}

// ProcessAlive reports whether pid names a running process.
func ProcessAlive(pid int) bool { return processAlive(pid) }

// readFileSmall reads a small file (a /proc file, whose size stat reports
// as 0).
func readFileSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 16<<20))
}
