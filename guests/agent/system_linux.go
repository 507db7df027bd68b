package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

func init() { platform = linuxSystem{} }

// linuxSystem is the real kernel.
type linuxSystem struct{}

// mountFlags maps mount(8) options that are mount(2) flags, not
// filesystem data: set is or-ed in, clear is masked out.
var mountFlags = map[string]struct{ set, clear uintptr }{
	"ro":          {set: unix.MS_RDONLY},
	"rw":          {clear: unix.MS_RDONLY},
	"nosuid":      {set: unix.MS_NOSUID},
	"suid":        {clear: unix.MS_NOSUID},
	"nodev":       {set: unix.MS_NODEV},
	"dev":         {clear: unix.MS_NODEV},
	"noexec":      {set: unix.MS_NOEXEC},
	"exec":        {clear: unix.MS_NOEXEC},
	"sync":        {set: unix.MS_SYNCHRONOUS},
	"async":       {clear: unix.MS_SYNCHRONOUS},
	"dirsync":     {set: unix.MS_DIRSYNC},
	"noatime":     {set: unix.MS_NOATIME},
	"atime":       {clear: unix.MS_NOATIME},
	"nodiratime":  {set: unix.MS_NODIRATIME},
	"diratime":    {clear: unix.MS_NODIRATIME},
	"relatime":    {set: unix.MS_RELATIME},
	"norelatime":  {clear: unix.MS_RELATIME},
	"strictatime": {set: unix.MS_STRICTATIME},
	"lazytime":    {set: unix.MS_LAZYTIME},
	"nolazytime":  {clear: unix.MS_LAZYTIME},
	"mand":        {set: unix.MS_MANDLOCK},
	"nomand":      {clear: unix.MS_MANDLOCK},
	"silent":      {set: unix.MS_SILENT},
	"loud":        {clear: unix.MS_SILENT},
}

// ignoredOptions are fstab-only options that mean nothing to the kernel.
var ignoredOptions = map[string]bool{
	"defaults": true, "auto": true, "noauto": true, "user": true, "nouser": true,
	"users": true, "owner": true, "group": true, "_netdev": true, "nofail": true,
}

// MountFlags splits mount -o style options into mount(2) flags and the
// filesystem's data string, as mount(8) does. readOnly adds MS_RDONLY
// (and wins over "rw").
func MountFlags(opts string, readOnly bool) (flags uintptr, data string) {
	var rest []string
	for _, o := range strings.Split(opts, ",") {
		o = strings.TrimSpace(o)
		if o == "" || ignoredOptions[o] {
			continue
		}
		if f, ok := mountFlags[o]; ok {
			flags = flags&^f.clear | f.set
			continue
		}
		rest = append(rest, o)
	}
	if readOnly {
		flags |= unix.MS_RDONLY
	}
	return flags, strings.Join(rest, ",")
}

func (linuxSystem) mount(ctx context.Context, spec mountSpec) error {
	flags, data := MountFlags(spec.Data, spec.ReadOnly)
	if flags&unix.MS_RDONLY != 0 {
		if err := setBlockReadOnly(spec.Source); err != nil {
			return err
		}
	}
	km := openKmsg()
	defer km.close()
	err := unix.Mount(spec.Source, spec.Target, spec.FSType, flags, data)
	if err == nil {
		return nil
	}
	return &MountError{Source: spec.Source, FSType: spec.FSType, Kernel: KernelError(km.read(), spec.Source), Err: err}
}

// setBlockReadOnly marks a block device read-only (BLKROSET), so that not
// even journal replay writes to it.
func setBlockReadOnly(dev string) error {
	f, err := os.Open(dev)
	if err != nil {
		return fmt.Errorf("setting %s read-only: %w", dev, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("setting %s read-only: %w", dev, err)
	}
	if st.Mode()&os.ModeDevice == 0 || st.Mode()&os.ModeCharDevice != 0 {
		return nil // not a block device (a regular file, say): nothing to set
	}
	conn, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("setting %s read-only: %w", dev, err)
	}
	var ioErr error
	if err := conn.Control(func(fd uintptr) { ioErr = unix.IoctlSetPointerInt(int(fd), unix.BLKROSET, 1) }); err != nil {
		return fmt.Errorf("setting %s read-only: %w", dev, err)
	}
	if ioErr != nil {
		return fmt.Errorf("setting %s read-only: BLKROSET: %w", dev, ioErr)
	}
	return nil
}

// kmsgReader reads the kernel log records written after it was opened.
type kmsgReader struct{ fd int }

// openKmsg opens /dev/kmsg at its end; without it, read returns nothing.
func openKmsg() kmsgReader {
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return kmsgReader{fd: -1}
	}
	if _, err := unix.Seek(fd, 0, unix.SEEK_END); err != nil {
		unix.Close(fd)
		return kmsgReader{fd: -1}
	}
	return kmsgReader{fd: fd}
}

// read returns the records logged since open (or the last read).
func (k kmsgReader) read() []KmsgRecord {
	if k.fd < 0 {
		return nil
	}
	var recs []KmsgRecord
	buf := make([]byte, 8192)
	for range 10000 {
		n, err := unix.Read(k.fd, buf)
		if errors.Is(err, unix.EPIPE) {
			continue // records were overwritten; go on with the next
		}
		if err != nil || n <= 0 {
			break // EAGAIN: no more records
		}
		if r, ok := ParseKmsgRecord(string(buf[:n])); ok {
			recs = append(recs, r)
		}
	}
	return recs
}

func (k kmsgReader) close() {
	if k.fd >= 0 {
		unix.Close(k.fd)
	}
}

func (linuxSystem) unmount(dir string, detach bool) error {
	flags := 0
	if detach {
		flags = unix.MNT_DETACH
	}
	if err := unix.Unmount(dir, flags); err != nil {
		return fmt.Errorf("unmounting %s: %w", dir, err)
	}
	return nil
}

func (linuxSystem) sync() { unix.Sync() }

func (linuxSystem) readOnly(dir string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return false
	}
	return st.Flags&unix.ST_RDONLY != 0
}

func (linuxSystem) filesystems() ([]string, error) {
	f, err := os.Open("/proc/filesystems")
	if err != nil {
		return nil, fmt.Errorf("listing filesystems: %w", err)
	}
	defer f.Close()
	fs, err := ParseFilesystems(f)
	if err != nil {
		return nil, fmt.Errorf("listing filesystems: %w", err)
	}
	return fs, nil
}

func (linuxSystem) kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

func (linuxSystem) bootTimeMS() int64 { return BootTimeMS() }

// BootTimeMS returns CLOCK_BOOTTIME in milliseconds: the guest's uptime.
func BootTimeMS() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return ts.Sec*1000 + ts.Nsec/1e6
}
