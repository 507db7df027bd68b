package main

import (
	"os"

	"golang.org/x/sys/unix"
)

func isTerminal(fd uintptr) bool {
	_, err := unix.IoctlGetTermios(int(fd), unix.TIOCGETA)
	return err == nil
}

// redirectStderr makes f the process' stderr (fd 2).
func redirectStderr(f *os.File) { unix.Dup2(int(f.Fd()), 2) }
