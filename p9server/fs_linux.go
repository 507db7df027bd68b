//go:build linux

package p9server

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// fsys is the exported tree: the root directory's O_PATH descriptor and
// what every file shares.
type fsys struct {
	s       *Server
	rootDev uint64

	mu     sync.RWMutex // guards rootFd against Close
	rootFd int

	// procOK says /proc/self/fd works, so an O_PATH descriptor can be
	// reopened for I/O and used by path-only calls (xattrs, truncate).
	procOK bool
	// noOpenat2 is set once openat2 turned out to be missing.
	noOpenat2 atomic.Bool

	// foreign maps (dev, ino) of inodes on other filesystems mounted
	// below the root to QID paths with the top bit set.
	foreign     sync.Map // devIno -> uint64
	nextForeign atomic.Uint64
}

type devIno struct{ dev, ino uint64 }

var _ fsCloser = (*fsys)(nil)

func newFS(root string, s *Server) (fsCloser, error) {
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	st, err := statxFd(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("stat: %w", err)
	}
	fs := &fsys{s: s, rootFd: fd, rootDev: unix.Mkdev(st.Dev_major, st.Dev_minor)}
	var pst unix.Stat_t
	fs.procOK = unix.Stat(procPath(fd), &pst) == nil && pst.Ino == st.Ino
	return fs, nil
}

// Attach implements p9.Attacher: every attach gets its own root file.
func (fs *fsys) Attach() (p9.File, error) {
	fs.mu.RLock()
	defer fs.mu.RUnlock()
	if fs.rootFd < 0 {
		return nil, linux.EBADF
	}
	fd, err := unix.FcntlInt(uintptr(fs.rootFd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, errno(err)
	}
	st, err := statxFd(fd)
	if err != nil {
		unix.Close(fd)
		return nil, errno(err)
	}
	return fs.newFile(fd, &st, nil, ""), nil
}

// Close releases the root descriptor.
func (fs *fsys) Close() error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.rootFd < 0 {
		return nil
	}
	err := unix.Close(fs.rootFd)
	fs.rootFd = -1
	return err
}

// qid returns the QID of an inode. Path is the inode number, so the host
// client can derive FUSE inode numbers from it; inodes of other
// filesystems mounted below the root get numbers with the top bit set,
// allocated on first sight. Version is always 0: the server keeps no
// per-inode change counter (Attr.DataVersion carries a change indicator).
func (fs *fsys) qid(dev, ino uint64, mode uint32) p9.QID {
	return p9.QID{Type: p9.FileMode(mode).QIDType(), Path: fs.qidPath(dev, ino)}
}

func (fs *fsys) qidPath(dev, ino uint64) uint64 {
	if dev == fs.rootDev {
		return ino
	}
	k := devIno{dev, ino}
	if v, ok := fs.foreign.Load(k); ok {
		return v.(uint64)
	}
	v, _ := fs.foreign.LoadOrStore(k, 1<<63|fs.nextForeign.Add(1))
	return v.(uint64)
}

// openPath opens name in dir as an O_PATH descriptor without following a
// symlink anywhere (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS where the
// kernel has it, else openat O_NOFOLLOW on the single, validated
// component).
func (fs *fsys) openPath(dirfd int, name string) (int, error) {
	if !fs.noOpenat2.Load() {
		how := unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		}
		for i := 0; ; i++ {
			fd, err := unix.Openat2(dirfd, name, &how)
			if err == unix.ENOSYS {
				fs.noOpenat2.Store(true)
				break
			}
			if (err == unix.EAGAIN || err == unix.EINTR) && i < 16 {
				continue
			}
			return fd, err
		}
	}
	for {
		fd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.EINTR {
			continue
		}
		return fd, err
	}
}

func procPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// checkName rejects names that are not a single path component: the 9P
// library already refuses "", ".", ".." and "/", but not NUL.
func checkName(name string) error {
	switch {
	case name == "":
		return linux.ENOENT
	case name == "." || name == "..":
		return linux.EINVAL
	case strings.ContainsAny(name, "/\x00"):
		return linux.EINVAL
	}
	return nil
}

// errno converts a system error to the library's linux.Errno, so that the
// library encodes exactly this errno. (It would otherwise turn EPERM into
// EACCES and ENOTEMPTY into EEXIST, through os.ErrPermission/os.ErrExist.)
func errno(err error) error {
	if err == nil {
		return nil
	}
	var se unix.Errno
	if errors.As(err, &se) {
		return linux.Errno(se)
	}
	var le linux.Errno
	if errors.As(err, &le) {
		return le
	}
	return err
}

// statx flags used everywhere: never follow, plain stat semantics, and
// the birth time when the filesystem keeps one.
const (
	statxMask  = unix.STATX_BASIC_STATS | unix.STATX_BTIME
	statxFlags = unix.AT_SYMLINK_NOFOLLOW | unix.AT_STATX_SYNC_AS_STAT
)

func statxAt(dirfd int, name string) (unix.Statx_t, error) {
	var st unix.Statx_t
	for {
		err := unix.Statx(dirfd, name, statxFlags, statxMask, &st)
		if err == unix.EINTR {
			continue
		}
		return st, err
	}
}

func statxFd(fd int) (unix.Statx_t, error) {
	var st unix.Statx_t
	for {
		err := unix.Statx(fd, "", statxFlags|unix.AT_EMPTY_PATH, statxMask, &st)
		if err == unix.EINTR {
			continue
		}
		return st, err
	}
}

func stxDev(st *unix.Statx_t) uint64 { return unix.Mkdev(st.Dev_major, st.Dev_minor) }

// attrFromStatx fills every getattr field statx gives: Gen is left out
// (statx has none); DataVersion is a change indicator derived from ctime
// in nanoseconds, which changes whenever data or metadata change.
func attrFromStatx(st *unix.Statx_t) (p9.AttrMask, p9.Attr) {
	a := p9.Attr{
		Mode:             p9.FileMode(st.Mode),
		UID:              p9.UID(st.Uid),
		GID:              p9.GID(st.Gid),
		NLink:            p9.NLink(st.Nlink),
		RDev:             p9.Dev(unix.Mkdev(st.Rdev_major, st.Rdev_minor)),
		Size:             st.Size,
		BlockSize:        uint64(st.Blksize),
		Blocks:           st.Blocks,
		ATimeSeconds:     uint64(st.Atime.Sec),
		ATimeNanoSeconds: uint64(st.Atime.Nsec),
		MTimeSeconds:     uint64(st.Mtime.Sec),
		MTimeNanoSeconds: uint64(st.Mtime.Nsec),
		CTimeSeconds:     uint64(st.Ctime.Sec),
		CTimeNanoSeconds: uint64(st.Ctime.Nsec),
		DataVersion:      uint64(st.Ctime.Sec)*1e9 + uint64(st.Ctime.Nsec),
	}
	m := p9.AttrMask{
		Mode: true, NLink: true, UID: true, GID: true, RDev: true,
		ATime: true, MTime: true, CTime: true, INo: true, Size: true,
		Blocks: true, DataVersion: true,
	}
	if st.Mask&unix.STATX_BTIME != 0 {
		m.BTime = true
		a.BTimeSeconds = uint64(st.Btime.Sec)
		a.BTimeNanoSeconds = uint64(st.Btime.Nsec)
	}
	return m, a
}

// dtQIDType maps a getdents d_type to a QID type.
func dtQIDType(t uint8) (p9.QIDType, bool) {
	switch t {
	case unix.DT_DIR:
		return p9.TypeDir, true
	case unix.DT_LNK:
		return p9.TypeSymlink, true
	case unix.DT_UNKNOWN:
		return 0, false
	}
	return p9.TypeRegular, true
}

// 9P2000.L open flags (P9_DOTL_*), the same on every architecture; the
// host's O_* values differ between amd64 and arm64.
const (
	dotlAccMode   = 0o3
	dotlCreate    = 0o100
	dotlExcl      = 0o200
	dotlTrunc     = 0o1000
	dotlAppend    = 0o2000
	dotlNonblock  = 0o4000
	dotlDsync     = 0o10000
	dotlDirect    = 0o40000
	dotlDirectory = 0o200000
	dotlNoatime   = 0o1000000
	dotlSync      = 0o4000000
)

// openFlags maps the flags of a Tlopen/Tlcreate to open(2) flags. O_DIRECT
// is dropped: the server's buffers are not aligned for it, and the host
// side does its own caching anyway. O_CREAT, O_EXCL, O_NOCTTY, O_CLOEXEC,
// O_NOFOLLOW, O_DIRECTORY, O_LARGEFILE and FASYNC are handled by the server
// or meaningless here.
func openFlags(f p9.OpenFlags) int {
	v := uint32(f)
	fl := int(v & dotlAccMode)
	for _, m := range [...]struct {
		dotl uint32
		os   int
	}{
		{dotlTrunc, unix.O_TRUNC}, {dotlAppend, unix.O_APPEND},
		{dotlNonblock, unix.O_NONBLOCK}, {dotlDsync, unix.O_DSYNC},
		{dotlSync, unix.O_SYNC}, {dotlNoatime, unix.O_NOATIME},
	} {
		if v&m.dotl != 0 {
			fl |= m.os
		}
	}
	return fl
}
