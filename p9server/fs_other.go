//go:build !linux

package p9server

import (
	"errors"
	"runtime"
)

// newFS fails: the server serves Linux filesystems from inside a Linux
// guest (and from Linux hosts in tests and `qmount loopback`).
func newFS(root string, s *Server) (fsCloser, error) {
	return nil, errors.New("not supported on " + runtime.GOOS)
}
