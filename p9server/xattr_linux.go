//go:build linux

package p9server

import (
	"encoding/binary"
	"strings"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"github.com/qmount/qmount/internal/p9ext"
	"golang.org/x/sys/unix"
)

// maxXattrReply is the largest value the 9P library passes on from
// GetXattr (Txattrwalk): anything larger becomes EINVAL without a fid.
const maxXattrReply = 4 << 20

// The 9P library hands every GetXattr/ListXattrs error to the client as
// EINVAL (Txattrwalk), so for a missing attribute a client sees EINVAL,
// not ENODATA. SetXattr/RemoveXattr errors (Tclunk of a Txattrcreate fid)
// keep their errno.

// xattrTarget says how to reach the inode's own xattrs: an open
// descriptor (f* calls) or a path (/proc/self/fd/N, which ends at the
// inode itself even for a symlink).
func (f *file) xattrTarget() (fd int, path string, err error) {
	if fd := f.io(); fd >= 0 {
		return fd, "", nil
	}
	if f.fs.procOK {
		return -1, procPath(f.fd), nil
	}
	return -1, "", linux.EOPNOTSUPP
}

// GetXattr implements p9.File.GetXattr. On a directory, a name accepted
// by p9ext.ParseReaddirPlusName returns a READDIRPLUS batch (or one of
// names only), one accepted by p9ext.ParseReaddirTreeName the listings
// of subdirectories (READDIRTREE), instead of an attribute. On success
// it takes a reference (see file).
func (f *file) GetXattr(name string) ([]byte, error) {
	var (
		b   []byte
		err error
	)
	if off, max, namesOnly, ok := p9ext.ParseReaddirPlusName(name); ok && f.isDir() {
		b, err = f.readdirPlus(off, max, namesOnly)
	} else if start, limit, ok := p9ext.ParseExtentsName(name); ok {
		b, err = f.extentMap(start, limit)
	} else if after, max, dirs, namesOnly, ok := p9ext.ParseReaddirTreeName(name); ok && f.isDir() {
		b, err = f.readdirTree(after, max, dirs, namesOnly)
	} else {
		b, err = f.getxattr(name)
	}
	if err != nil {
		return nil, err
	}
	if len(b) > maxXattrReply {
		return nil, linux.E2BIG
	}
	f.refs.Add(1)
	return b, nil
}

func (f *file) getxattr(name string) ([]byte, error) {
	fd, path, err := f.xattrTarget()
	if err != nil {
		return nil, err
	}
	get := func(dest []byte) (int, error) {
		if fd >= 0 {
			return unix.Fgetxattr(fd, name, dest)
		}
		return unix.Getxattr(path, name, dest)
	}
	for {
		n, err := get(nil)
		if err != nil {
			return nil, errno(err)
		}
		buf := make([]byte, n)
		if n == 0 {
			return buf, nil
		}
		n, err = get(buf)
		if err == unix.ERANGE {
			continue // grew in between
		}
		if err != nil {
			return nil, errno(err)
		}
		return buf[:n], nil
	}
}

// ListXattrs implements p9.File.ListXattrs. On success it takes a
// reference (see file).
func (f *file) ListXattrs() ([]string, error) {
	fd, path, err := f.xattrTarget()
	if err != nil {
		return nil, err
	}
	list := func(dest []byte) (int, error) {
		if fd >= 0 {
			return unix.Flistxattr(fd, dest)
		}
		return unix.Listxattr(path, dest)
	}
	var names []string
	for {
		n, err := list(nil)
		if err != nil {
			return nil, errno(err)
		}
		if n == 0 {
			break
		}
		buf := make([]byte, n)
		n, err = list(buf)
		if err == unix.ERANGE {
			continue
		}
		if err != nil {
			return nil, errno(err)
		}
		names = splitNames(buf[:n])
		break
	}
	f.refs.Add(1)
	return names, nil
}

// SetXattr implements p9.File.SetXattr; flags are XATTR_CREATE (1) and
// XATTR_REPLACE (2), the same in 9P2000.L and Linux.
func (f *file) SetXattr(name string, data []byte, flags p9.XattrFlags) error {
	if err := f.roErr(); err != nil {
		return err
	}
	if name == ChmodXattr {
		if len(data) != 4 {
			return linux.EINVAL
		}
		return f.chmod(binary.LittleEndian.Uint32(data) & 0o7777)
	}
	fd, path, err := f.xattrTarget()
	if err != nil {
		return err
	}
	fl := int(flags) & (unix.XATTR_CREATE | unix.XATTR_REPLACE)
	if fd >= 0 {
		return errno(unix.Fsetxattr(fd, name, data, fl))
	}
	return errno(unix.Setxattr(path, name, data, fl))
}

// RemoveXattr implements p9.File.RemoveXattr.
func (f *file) RemoveXattr(name string) error {
	if err := f.roErr(); err != nil {
		return err
	}
	fd, path, err := f.xattrTarget()
	if err != nil {
		return err
	}
	if fd >= 0 {
		return errno(unix.Fremovexattr(fd, name))
	}
	return errno(unix.Removexattr(path, name))
}

// llistxattr lists the xattr names of path (not following a final
// symlink), reusing buf.
func llistxattr(path string, buf []byte) ([]string, []byte, error) {
	if cap(buf) == 0 {
		buf = make([]byte, 0, 1024)
	}
	for {
		n, err := unix.Llistxattr(path, buf[:cap(buf)])
		if err == unix.ERANGE {
			if n, err = unix.Llistxattr(path, nil); err != nil {
				return nil, buf, err
			}
			buf = make([]byte, 0, n+256)
			continue
		}
		if err != nil {
			return nil, buf, err
		}
		return splitNames(buf[:n]), buf, nil
	}
}

func splitNames(b []byte) []string {
	var names []string
	for _, s := range strings.Split(string(b), "\x00") {
		if s != "" {
			names = append(names, s)
		}
	}
	return names
}
