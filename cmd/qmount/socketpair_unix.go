package main

import (
	"fmt"
	"io"
	"os"
	"syscall"
)

// socketPair returns the two ends of a connected stream socket pair, as
// plain io.ReadWriteClosers (not syscall.Conn: hugelgupf/p9 would use
// recvmsg on those).
func socketPair() (io.ReadWriteCloser, io.ReadWriteCloser, error) {
	syscall.ForkLock.RLock()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err == nil {
		syscall.CloseOnExec(fds[0])
		syscall.CloseOnExec(fds[1])
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return nil, nil, fmt.Errorf("creating socket pair: %w", err)
	}
	// Non-blocking descriptors make pollable *os.Files, whose Close
	// interrupts a Read in progress (a blocking one would wait forever for
	// the peer, which waits for us).
	for _, fd := range fds {
		if err := syscall.SetNonblock(fd, true); err != nil {
			syscall.Close(fds[0])
			syscall.Close(fds[1])
			return nil, nil, fmt.Errorf("creating socket pair: %w", err)
		}
	}
	a := os.NewFile(uintptr(fds[0]), "p9-server")
	b := os.NewFile(uintptr(fds[1]), "p9-client")
	return plainRWC{a}, plainRWC{b}, nil
}
