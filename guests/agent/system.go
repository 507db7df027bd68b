package agent

import (
	"bufio"
	"context"
	"io"
	"strings"
	"syscall"
)

// mountSpec is one mount(2) call.
type mountSpec struct {
	Source   string
	Target   string
	FSType   string
	Data     string // options as for mount -o
	ReadOnly bool
}

// system is what the agent needs from the kernel. The platform file
// registers it from init; it is nil where the agent cannot run.
type system interface {
	// mount mounts spec; on failure it returns a *MountError carrying
	// the kernel's log lines about it.
	mount(ctx context.Context, spec mountSpec) error
	unmount(dir string, detach bool) error
	sync()
	readOnly(dir string) bool
	// filesystems lists the block-device filesystem types the kernel
	// knows (/proc/filesystems without nodev ones).
	filesystems() ([]string, error)
	kernelRelease() string
	bootTimeMS() int64
}

var platform system

// errNoDriver is what mount(2) returns for a filesystem type the kernel
// does not know.
var errNoDriver error = syscall.ENODEV

// MountError is a failed mount(2), with what the kernel logged about it.
type MountError struct {
	Source, FSType string
	// Kernel holds the kernel's own lines about the failure, e.g.
	// "EXT4-fs (vda): VFS: Can't find ext4 filesystem"; may be empty.
	Kernel string
	Err    error // the errno
}

// Error returns the kernel's text followed by the errno, or, when the
// kernel said nothing, what was mounted and the errno.
func (e *MountError) Error() string {
	if e.Kernel != "" {
		return e.Kernel + " (" + e.Err.Error() + ")"
	}
	return "mounting " + e.Source + " as " + e.FSType + ": " + e.Err.Error()
}

func (e *MountError) Unwrap() error { return e.Err }

// ParseFilesystems returns the block-device filesystem types listed in
// /proc/filesystems format ("nodev\tproc", "\text4"), in order.
func ParseFilesystems(r io.Reader) ([]string, error) {
	var out []string
	s := bufio.NewScanner(r)
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) == 1 {
			out = append(out, f[0])
		}
	}
	return out, s.Err()
}
