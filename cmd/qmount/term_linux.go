package main

import (
	"os"

	"golang.org/x/sys/unix"
)

func isTerminal(fd uintptr) bool {
	_, err := unix.IoctlGetTermios(int(fd), unix.TCGETS)
	return err == nil
}

// redirectStderr makes f the process' stderr (fd 2).
func redirectStderr(f *os.File) { unix.Dup3(int(f.Fd()), 2, 0) }
