//go:build linux

package p9server

import (
	"io"
	"math"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// file is one walked-to inode. It holds an O_PATH descriptor of the inode
// (fd), from which everything else is reached with *at calls; after Open
// (or Create) it also holds an I/O descriptor (ioFd).
//
// Reference counting: the 9P library calls Close once for every fid
// holding the file. Normally that is one fid, but Txattrwalk makes a
// second fid share the same File (and Tclunk of that fid closes it), so
// every successful GetXattr/ListXattrs takes one more reference, which
// that Close drops.
type file struct {
	fs   *fsys
	fd   int    // O_PATH descriptor of the inode; valid until release
	mode uint32 // S_IFMT bits, fixed at walk time
	dev  uint64
	refs atomic.Int32

	nameMu sync.Mutex
	parent *file // nil for the root; the library keeps it alive
	name   string

	ioMu      sync.Mutex
	ioFd      int // -1 until Open/Create
	ioFlags   int
	list      *dirStream // Readdir state over ioFd
	plus      *dirStream // READDIRPLUS state over its own descriptor
	releasedB bool
}

var _ p9.File = (*file)(nil)

// fsIocGetVersion is FS_IOC_GETVERSION, _IOR('v', 1, long).
const fsIocGetVersion = 2<<30 | uint(unsafe.Sizeof(uintptr(0)))<<16 | 'v'<<8 | 1

func (fs *fsys) newFile(fd int, st *unix.Statx_t, parent *file, name string) *file {
	f := &file{
		fs:     fs,
		fd:     fd,
		mode:   uint32(st.Mode) & unix.S_IFMT,
		dev:    stxDev(st),
		parent: parent,
		name:   name,
		ioFd:   -1,
	}
	f.refs.Store(1)
	fs.s.openFiles.Add(1)
	return f
}

func (f *file) isDir() bool     { return f.mode == unix.S_IFDIR }
func (f *file) isSymlink() bool { return f.mode == unix.S_IFLNK }
func (f *file) isRegular() bool { return f.mode == unix.S_IFREG }

// io returns the I/O descriptor, or -1 before Open.
func (f *file) io() int {
	f.ioMu.Lock()
	defer f.ioMu.Unlock()
	return f.ioFd
}

func (f *file) qidOf(st *unix.Statx_t) p9.QID {
	return f.fs.qid(stxDev(st), st.Ino, uint32(st.Mode))
}

func (f *file) roErr() error {
	if f.fs.s.readOnly {
		return linux.EROFS
	}
	return nil
}

// Walk implements p9.File.Walk: no names clones the file, one name walks
// to a child (never through or to the target of a symlink).
func (f *file) Walk(names []string) ([]p9.QID, p9.File, error) {
	qids, nf, _, err := f.walk(names)
	if err != nil {
		return nil, nil, err
	}
	return qids, nf, nil
}

// WalkGetAttr implements p9.File.WalkGetAttr: the walk already stats the
// new file, so the attributes come free.
func (f *file) WalkGetAttr(names []string) ([]p9.QID, p9.File, p9.AttrMask, p9.Attr, error) {
	qids, nf, st, err := f.walk(names)
	if err != nil {
		return nil, nil, p9.AttrMask{}, p9.Attr{}, err
	}
	valid, attr := attrFromStatx(&st)
	return qids, nf, valid, attr, nil
}

func (f *file) walk(names []string) ([]p9.QID, *file, unix.Statx_t, error) {
	var st unix.Statx_t
	switch len(names) {
	case 0:
		fd, err := unix.FcntlInt(uintptr(f.fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, nil, st, errno(err)
		}
		if st, err = statxFd(fd); err != nil {
			unix.Close(fd)
			return nil, nil, st, errno(err)
		}
		f.nameMu.Lock()
		parent, name := f.parent, f.name
		f.nameMu.Unlock()
		return nil, f.fs.newFile(fd, &st, parent, name), st, nil
	case 1:
	default:
		// The library walks one component at a time.
		return nil, nil, st, linux.EINVAL
	}
	name := names[0]
	if err := checkName(name); err != nil {
		return nil, nil, st, err
	}
	fd, err := f.fs.openPath(f.fd, name)
	if err != nil {
		return nil, nil, st, errno(err)
	}
	if st, err = statxFd(fd); err != nil {
		unix.Close(fd)
		return nil, nil, st, errno(err)
	}
	return []p9.QID{f.qidOf(&st)}, f.fs.newFile(fd, &st, f, name), st, nil
}

// GetAttr implements p9.File.GetAttr. It returns every field it has,
// whatever req asks for.
func (f *file) GetAttr(req p9.AttrMask) (p9.QID, p9.AttrMask, p9.Attr, error) {
	st, err := statxFd(f.fd)
	if err != nil {
		return p9.QID{}, p9.AttrMask{}, p9.Attr{}, errno(err)
	}
	valid, attr := attrFromStatx(&st)
	if req.Gen {
		// FS_IOC_GETVERSION needs a real descriptor; report the
		// generation only when the file is open anyway.
		if fd := f.io(); fd >= 0 && (f.isRegular() || f.isDir()) {
			if g, err := unix.IoctlGetInt(fd, fsIocGetVersion); err == nil {
				valid.Gen, attr.Gen = true, uint64(uint32(g))
			}
		}
	}
	return f.qidOf(&st), valid, attr, nil
}

// SetAttr implements p9.File.SetAttr in the order that keeps each change:
// owner (which may clear set-id bits), mode, size (which sets mtime), then
// times. "Set to now" uses UTIME_NOW. A request that asks for nothing but
// ctime sets ctime to now, as chown(file, -1, -1) does on Linux (Linux's
// v9fs client sends exactly that for it); with any other change the
// kernel sets ctime anyway.
func (f *file) SetAttr(valid p9.SetAttrMask, attr p9.SetAttr) error {
	if valid.Empty() {
		return nil
	}
	if err := f.roErr(); err != nil {
		return err
	}
	if valid.CTime && !valid.UID && !valid.GID && !valid.Permissions && !valid.Size && !valid.ATime && !valid.MTime {
		// A no-op chown changes nothing but ctime.
		return errno(unix.Fchownat(f.fd, "", -1, -1, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW))
	}
	if valid.UID || valid.GID {
		uid, gid := -1, -1
		if valid.UID && attr.UID.Ok() {
			uid = int(attr.UID)
		}
		if valid.GID && attr.GID.Ok() {
			gid = int(attr.GID)
		}
		if err := unix.Fchownat(f.fd, "", uid, gid, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return errno(err)
		}
	}
	if valid.Permissions {
		if err := f.chmod(uint32(attr.Permissions) & 0o7777); err != nil {
			return err
		}
	}
	if valid.Size {
		if err := f.truncate(attr.Size); err != nil {
			return err
		}
	}
	if valid.ATime || valid.MTime {
		ts := [2]unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		if valid.ATime {
			ts[0] = setTime(valid.ATimeNotSystemTime, attr.ATimeSeconds, attr.ATimeNanoSeconds)
		}
		if valid.MTime {
			ts[1] = setTime(valid.MTimeNotSystemTime, attr.MTimeSeconds, attr.MTimeNanoSeconds)
		}
		if err := unix.UtimesNanoAt(f.fd, "", ts[:], unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return errno(err)
		}
	}
	return nil
}

func setTime(given bool, sec, nsec uint64) unix.Timespec {
	if !given {
		return unix.Timespec{Nsec: unix.UTIME_NOW}
	}
	return unix.Timespec{Sec: int64(sec), Nsec: int64(nsec)}
}

// chmod changes the mode of the inode itself (a symlink's mode cannot be
// changed: EOPNOTSUPP, as lchmod).
func (f *file) chmod(mode uint32) error {
	if f.isSymlink() {
		return linux.EOPNOTSUPP
	}
	if fd := f.io(); fd >= 0 {
		return errno(unix.Fchmod(fd, mode))
	}
	if f.fs.procOK {
		return errno(unix.Chmod(procPath(f.fd), mode))
	}
	return errno(unix.Fchmodat(f.fd, "", mode, unix.AT_EMPTY_PATH))
}

func (f *file) truncate(size uint64) error {
	switch {
	case f.isDir():
		return linux.EISDIR
	case !f.isRegular():
		return linux.EINVAL
	case size > math.MaxInt64:
		return linux.EFBIG
	}
	f.ioMu.Lock()
	fd, flags := f.ioFd, f.ioFlags
	f.ioMu.Unlock()
	if fd >= 0 && flags&unix.O_ACCMODE != unix.O_RDONLY {
		return errno(unix.Ftruncate(fd, int64(size)))
	}
	if f.fs.procOK {
		return errno(unix.Truncate(procPath(f.fd), int64(size)))
	}
	wfd, err := f.reopen(unix.O_WRONLY)
	if err != nil {
		return err
	}
	defer unix.Close(wfd)
	return errno(unix.Ftruncate(wfd, int64(size)))
}

// reopen opens the inode itself for I/O (never another inode that took
// its name): through /proc/self/fd, or where /proc is missing through the
// parent with O_NOFOLLOW, checking that the inode is still the same.
func (f *file) reopen(flags int) (int, error) {
	if f.isDir() {
		fd, err := unix.Openat(f.fd, ".", flags|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		return fd, errno(err)
	}
	if f.fs.procOK {
		for {
			fd, err := unix.Open(procPath(f.fd), flags|unix.O_CLOEXEC, 0)
			if err == unix.EINTR {
				continue
			}
			return fd, errno(err)
		}
	}
	f.nameMu.Lock()
	parent, name := f.parent, f.name
	f.nameMu.Unlock()
	if parent == nil {
		return -1, linux.ESTALE
	}
	fd, err := unix.Openat(parent.fd, name, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, errno(err)
	}
	want, err1 := statxFd(f.fd)
	got, err2 := statxFd(fd)
	if err1 != nil || err2 != nil || want.Ino != got.Ino || stxDev(&want) != stxDev(&got) {
		unix.Close(fd)
		return -1, linux.ESTALE
	}
	return fd, nil
}

// Open implements p9.File.Open. A symlink cannot be opened (ELOOP, as
// O_NOFOLLOW), nor a socket (ENXIO).
func (f *file) Open(mode p9.OpenFlags) (p9.QID, uint32, error) {
	flags := openFlags(mode)
	switch {
	case uint32(mode)&dotlAccMode == dotlAccMode:
		return p9.QID{}, 0, linux.EINVAL
	case f.isSymlink():
		return p9.QID{}, 0, linux.ELOOP
	case f.mode == unix.S_IFSOCK:
		return p9.QID{}, 0, linux.ENXIO
	case f.isDir() && flags&unix.O_ACCMODE != unix.O_RDONLY:
		return p9.QID{}, 0, linux.EISDIR
	}
	if f.fs.s.readOnly && (flags&unix.O_ACCMODE != unix.O_RDONLY || flags&unix.O_TRUNC != 0) {
		return p9.QID{}, 0, linux.EROFS
	}
	f.ioMu.Lock()
	defer f.ioMu.Unlock()
	if f.ioFd >= 0 {
		return p9.QID{}, 0, linux.EINVAL
	}
	fd, err := f.reopen(flags)
	if err != nil {
		return p9.QID{}, 0, err
	}
	st, err := statxFd(fd)
	if err != nil {
		unix.Close(fd)
		return p9.QID{}, 0, errno(err)
	}
	f.ioFd, f.ioFlags = fd, flags
	if f.isDir() {
		f.list = newDirStream(fd)
	}
	return f.qidOf(&st), 0, nil
}

// ReadAt implements p9.File.ReadAt.
func (f *file) ReadAt(p []byte, offset int64) (int, error) {
	fd := f.io()
	if fd < 0 {
		return 0, linux.EBADF
	}
	for {
		n, err := unix.Pread(fd, p, offset)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, errno(err)
		}
		if n == 0 && len(p) > 0 {
			return 0, io.EOF
		}
		return n, nil
	}
}

// WriteAt implements p9.File.WriteAt. On a file opened with O_APPEND the
// data goes to the end whatever the offset (pwrite's Linux behaviour).
func (f *file) WriteAt(p []byte, offset int64) (int, error) {
	fd := f.io()
	if fd < 0 {
		return 0, linux.EBADF
	}
	total := 0
	for total < len(p) {
		n, err := unix.Pwrite(fd, p[total:], offset+int64(total))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			if total > 0 {
				return total, nil
			}
			return 0, errno(err)
		}
		if n == 0 {
			break
		}
		total += n
	}
	return total, nil
}

// FSync implements p9.File.FSync (files and directories).
func (f *file) FSync() error {
	fd := f.io()
	if fd < 0 {
		return linux.EBADF
	}
	return errno(unix.Fsync(fd))
}

// StatFS implements p9.File.StatFS with fstatfs, so df works.
func (f *file) StatFS() (p9.FSStat, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(f.fd, &st); err != nil {
		return p9.FSStat{}, errno(err)
	}
	return p9.FSStat{
		Type:            uint32(st.Type),
		BlockSize:       uint32(st.Bsize),
		Blocks:          st.Blocks,
		BlocksFree:      st.Bfree,
		BlocksAvailable: st.Bavail,
		Files:           st.Files,
		FilesFree:       st.Ffree,
		FSID:            uint64(uint32(st.Fsid.Val[0])) | uint64(uint32(st.Fsid.Val[1]))<<32,
		NameLength:      uint32(st.Namelen),
	}, nil
}

// Lock implements p9.File.Lock with open-file-description locks
// (F_OFD_SETLK) on the file's I/O descriptor. Classic POSIX locks belong
// to a process, and every lock taken by this server would belong to the
// server process, so two clients' locks would never conflict; OFD locks
// belong to the fid's open file instead. A lock that conflicts returns
// LockStatusBlocked whether or not the client asked to block: Linux's v9fs
// client (and ours) then retries, so the server never sleeps in a handler.
func (f *file) Lock(pid int, locktype p9.LockType, flags p9.LockFlags, start, length uint64, client string) (p9.LockStatus, error) {
	fd := f.io()
	if fd < 0 {
		return p9.LockStatusError, linux.EBADF
	}
	if start > math.MaxInt64 || length > math.MaxInt64 {
		return p9.LockStatusError, linux.EINVAL
	}
	lk := unix.Flock_t{Whence: io.SeekStart, Start: int64(start), Len: int64(length)}
	switch locktype {
	case p9.ReadLock:
		lk.Type = unix.F_RDLCK
	case p9.WriteLock:
		lk.Type = unix.F_WRLCK
	case p9.Unlock:
		lk.Type = unix.F_UNLCK
	default:
		return p9.LockStatusError, linux.EINVAL
	}
	for {
		err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk)
		switch err {
		case nil:
			return p9.LockStatusOK, nil
		case unix.EINTR:
			continue
		case unix.EAGAIN, unix.EACCES:
			return p9.LockStatusBlocked, nil
		}
		return p9.LockStatusError, errno(err)
	}
}

// Create implements p9.File.Create: it creates name in this directory
// (O_EXCL when the client asked for it; otherwise an existing file is
// opened, never through a symlink) and returns the new, open file. A new
// file gets the uid/gid the client sent and exactly the permissions asked
// for (the server's umask does not apply: the client applied its own).
func (f *file) Create(name string, flags p9.OpenFlags, perm p9.FileMode, uid p9.UID, gid p9.GID) (p9.File, p9.QID, uint32, error) {
	if err := f.roErr(); err != nil {
		return nil, p9.QID{}, 0, err
	}
	if err := checkName(name); err != nil {
		return nil, p9.QID{}, 0, err
	}
	if uint32(flags)&dotlAccMode == dotlAccMode {
		return nil, p9.QID{}, 0, linux.EINVAL
	}
	oflags := openFlags(flags)
	want := uint32(perm) & 0o7777
	created := true
	fd, err := unix.Openat(f.fd, name, oflags|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, want)
	if err == unix.EEXIST && uint32(flags)&dotlExcl == 0 {
		created = false
		fd, err = unix.Openat(f.fd, name, oflags|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, p9.QID{}, 0, errno(err)
	}
	st, err := statxFd(fd)
	if err == nil && !created && uint32(st.Mode)&unix.S_IFMT == unix.S_IFDIR {
		err = linux.EISDIR // as open(2) with O_CREAT on a directory
	}
	if err == nil && created {
		if err = f.fixNew(fd, &st, uid, gid, want); err != nil {
			unix.Unlinkat(f.fd, name, 0) // still ours: nothing else ran in between
		}
	}
	var pfd int
	if err == nil {
		pfd, err = f.fs.openPath(f.fd, name)
		if err == nil {
			var pst unix.Statx_t
			if pst, err = statxFd(pfd); err == nil && (pst.Ino != st.Ino || stxDev(&pst) != stxDev(&st)) {
				err = linux.ESTALE // replaced by someone else since: leave it
			}
			if err != nil {
				unix.Close(pfd)
			}
		}
	}
	if err != nil {
		unix.Close(fd)
		return nil, p9.QID{}, 0, errno(err)
	}
	nf := f.fs.newFile(pfd, &st, f, name)
	nf.ioFd, nf.ioFlags = fd, oflags
	return nf, nf.qidOf(&st), 0, nil
}

// newGID returns the group a new entry of directory f (whose attributes,
// as created, are st) gets: the one the client asked for, unless f is a
// set-group-ID directory, whose new entries take its group (the kernel
// already gave them that, as it does on a local disk and as Linux's v9fs
// client asks for).
func (f *file) newGID(gid p9.GID, st *unix.Statx_t) p9.GID {
	if !gid.Ok() || uint32(gid) == st.Gid {
		return gid
	}
	if dst, err := statxFd(f.fd); err == nil && dst.Mode&unix.S_ISGID != 0 {
		return p9.NoGID
	}
	return gid
}

// hasDefaultACL reports whether directory f has a default POSIX ACL.
func (f *file) hasDefaultACL() bool {
	fd, path, err := f.xattrTarget()
	if err != nil {
		return false
	}
	var n int
	if fd >= 0 {
		n, err = unix.Fgetxattr(fd, "system.posix_acl_default", nil)
	} else {
		n, err = unix.Getxattr(path, "system.posix_acl_default", nil)
	}
	return err == nil && n > 0
}

// fixNew gives a just-created entry of directory f (reached by fd, which
// may be O_PATH) the owner the client asked for (the group as newGID
// says) and exactly the permissions want, undoing the server's umask. It
// costs nothing when they are right already (umask 0, same owner). Where
// f has a default POSIX ACL the filesystem already derived the
// permissions from it and want, ignoring the umask, as on a local disk:
// they are kept, since a chmod to want would widen them past the ACL.
func (f *file) fixNew(fd int, st *unix.Statx_t, uid p9.UID, gid p9.GID, want uint32) error {
	gid = f.newGID(gid, st)
	u, g := -1, -1
	if uid.Ok() && uint32(uid) != st.Uid {
		u = int(uid)
	}
	if gid.Ok() && uint32(gid) != st.Gid {
		g = int(gid)
	}
	isDir := uint32(st.Mode)&unix.S_IFMT == unix.S_IFDIR
	if u != -1 || g != -1 {
		if err := unix.Fchownat(fd, "", u, g, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		if u != -1 {
			st.Uid = uint32(u)
		}
		if g != -1 {
			st.Gid = uint32(g)
		}
		if !isDir && want&(unix.S_ISUID|unix.S_ISGID) != 0 {
			st.Mode &^= unix.S_ISUID | unix.S_ISGID // chown cleared them
		}
	}
	if uint32(st.Mode)&unix.S_IFMT == unix.S_IFLNK {
		return nil
	}
	have := uint32(st.Mode) & 0o7777
	target := want
	if isDir {
		target |= have & unix.S_ISGID // inherited from a set-group-ID parent
	}
	if have != target && f.hasDefaultACL() {
		// Keep the permission bits derived from the ACL; restore only
		// set-ID and sticky bits (a chown above may have cleared them).
		target = have&0o777 | target&^0o777
	}
	if have == target {
		return nil
	}
	var err error
	if fl, ferr := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); ferr == nil && fl&unix.O_PATH == 0 {
		err = unix.Fchmod(fd, target)
	} else {
		err = unix.Chmod(procPath(fd), target)
		if err == unix.ENOENT {
			err = unix.Fchmodat(fd, "", target, unix.AT_EMPTY_PATH)
		}
	}
	if err == nil {
		st.Mode = st.Mode&unix.S_IFMT | uint16(target)
	}
	return err
}

// newChild stats a just-created child and fixes its owner and mode; if
// that fails it removes the child again (unlinkat with unlinkFlags).
func (f *file) newChild(name string, uid p9.UID, gid p9.GID, want uint32, unlinkFlags int) (p9.QID, error) {
	fd, err := f.fs.openPath(f.fd, name)
	if err != nil {
		return p9.QID{}, errno(err)
	}
	defer unix.Close(fd)
	st, err := statxFd(fd)
	if err == nil {
		err = f.fixNew(fd, &st, uid, gid, want)
	}
	if err != nil {
		unix.Unlinkat(f.fd, name, unlinkFlags)
		return p9.QID{}, errno(err)
	}
	return f.qidOf(&st), nil
}

// Mkdir implements p9.File.Mkdir.
func (f *file) Mkdir(name string, perm p9.FileMode, uid p9.UID, gid p9.GID) (p9.QID, error) {
	if err := f.roErr(); err != nil {
		return p9.QID{}, err
	}
	if err := checkName(name); err != nil {
		return p9.QID{}, err
	}
	want := uint32(perm) & 0o7777
	if err := unix.Mkdirat(f.fd, name, want); err != nil {
		return p9.QID{}, errno(err)
	}
	return f.newChild(name, uid, gid, want, unix.AT_REMOVEDIR)
}

// Symlink implements p9.File.Symlink: newName in this directory pointing
// at oldName (stored as given, never resolved by the server).
func (f *file) Symlink(oldName, newName string, uid p9.UID, gid p9.GID) (p9.QID, error) {
	if err := f.roErr(); err != nil {
		return p9.QID{}, err
	}
	if err := checkName(newName); err != nil {
		return p9.QID{}, err
	}
	if err := unix.Symlinkat(oldName, f.fd, newName); err != nil {
		return p9.QID{}, errno(err)
	}
	return f.newChild(newName, uid, gid, 0o777, 0)
}

// Link implements p9.File.Link: a hard link newName in this directory to
// target's inode.
func (f *file) Link(target p9.File, newName string) error {
	if err := f.roErr(); err != nil {
		return err
	}
	if err := checkName(newName); err != nil {
		return err
	}
	t, ok := target.(*file)
	if !ok {
		return linux.EBADF
	}
	err := unix.Linkat(t.fd, "", f.fd, newName, unix.AT_EMPTY_PATH)
	if err == unix.ENOENT && f.fs.procOK {
		// Without CAP_DAC_READ_SEARCH, AT_EMPTY_PATH fails with ENOENT.
		err = unix.Linkat(unix.AT_FDCWD, procPath(t.fd), f.fd, newName, unix.AT_SYMLINK_FOLLOW)
	}
	return errno(err)
}

// Mknod implements p9.File.Mknod: fifos, sockets, character and block
// devices (and regular files).
func (f *file) Mknod(name string, mode p9.FileMode, major, minor uint32, uid p9.UID, gid p9.GID) (p9.QID, error) {
	if err := f.roErr(); err != nil {
		return p9.QID{}, err
	}
	if err := checkName(name); err != nil {
		return p9.QID{}, err
	}
	want := uint32(mode) & 0o7777
	if err := unix.Mknodat(f.fd, name, uint32(mode), int(unix.Mkdev(major, minor))); err != nil {
		return p9.QID{}, errno(err)
	}
	return f.newChild(name, uid, gid, want, 0)
}

// Rename implements p9.File.Rename; the server library always uses RenameAt.
func (f *file) Rename(p9.File, string) error { return linux.ENOSYS }

// RenameAt implements p9.File.RenameAt: oldName in this directory becomes
// newName in newDir, replacing what is there as rename(2) does.
func (f *file) RenameAt(oldName string, newDir p9.File, newName string) error {
	if err := f.roErr(); err != nil {
		return err
	}
	if err := checkName(oldName); err != nil {
		return err
	}
	if err := checkName(newName); err != nil {
		return err
	}
	nd, ok := newDir.(*file)
	if !ok {
		return linux.EBADF
	}
	return errno(unix.Renameat(f.fd, oldName, nd.fd, newName))
}

// UnlinkAt implements p9.File.UnlinkAt; flags may hold AT_REMOVEDIR
// (0x200 in 9P2000.L as on Linux).
func (f *file) UnlinkAt(name string, flags uint32) error {
	if err := f.roErr(); err != nil {
		return err
	}
	if err := checkName(name); err != nil {
		return err
	}
	return errno(unix.Unlinkat(f.fd, name, int(flags)&unix.AT_REMOVEDIR))
}

// Readlink implements p9.File.Readlink.
func (f *file) Readlink() (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(f.fd, "", buf)
		if err != nil {
			return "", errno(err)
		}
		if n < size || size >= 1<<16 {
			return string(buf[:n]), nil
		}
	}
}

// Renamed implements p9.File.Renamed, keeping the parent and name (used
// where /proc is missing) in step with the tree.
func (f *file) Renamed(newDir p9.File, newName string) {
	nd, ok := newDir.(*file)
	if !ok {
		return
	}
	f.nameMu.Lock()
	f.parent, f.name = nd, newName
	f.nameMu.Unlock()
}

// Close implements p9.File.Close: it drops one reference and releases the
// descriptors with the last.
func (f *file) Close() error {
	if f.refs.Add(-1) != 0 {
		return nil
	}
	f.ioMu.Lock()
	if f.releasedB {
		f.ioMu.Unlock()
		return nil
	}
	f.releasedB = true
	if f.ioFd >= 0 {
		unix.Close(f.ioFd)
		f.ioFd = -1
	}
	if f.plus != nil {
		f.plus.close()
	}
	f.ioMu.Unlock()
	unix.Close(f.fd)
	f.nameMu.Lock()
	f.parent = nil
	f.nameMu.Unlock()
	f.fs.s.openFiles.Add(-1)
	return nil
}
