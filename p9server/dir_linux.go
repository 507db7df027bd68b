//go:build linux

package p9server

import (
	"encoding/binary"
	"io"
	"sync"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"github.com/qmount/qmount/internal/p9ext"
	"golang.org/x/sys/unix"
)

// direntBufferSize is the getdents64 buffer of one directory stream.
const direntBufferSize = 64 << 10

// dirStream reads a directory with getdents64 and keeps the filesystem's
// own d_off cookies as readdir offsets. Cookies stay valid across calls
// and while entries are added (on ext4 they are hashes, on tmpfs stable
// positions), unlike an index into a listing. The stream remembers the
// cookie after the last entry it handed out; a request for another offset
// seeks there first (lseek to the cookie; 0 is the start).
type dirStream struct {
	mu         sync.Mutex
	fd         int
	ownFd      bool   // close fd with the stream
	pos        uint64 // cookie after the last consumed entry
	buf        []byte
	start, end int // unconsumed entries in buf
}

type rawDirent struct {
	ino    uint64
	off    uint64
	typ    uint8
	reclen int
	name   string
}

func newDirStream(fd int) *dirStream { return &dirStream{fd: fd} }

func (d *dirStream) close() {
	if d.ownFd && d.fd >= 0 {
		unix.Close(d.fd)
		d.fd = -1
	}
}

// seek positions the stream at cookie off. Caller holds d.mu.
func (d *dirStream) seek(off uint64) error {
	if off == d.pos && d.buf != nil {
		return nil
	}
	if _, err := unix.Seek(d.fd, int64(off), io.SeekStart); err != nil {
		return errno(err)
	}
	d.pos = off
	d.start, d.end = 0, 0
	if d.buf == nil {
		d.buf = make([]byte, direntBufferSize)
	}
	return nil
}

// peek returns the next entry without consuming it; ok is false at the
// end of the directory. Caller holds d.mu.
func (d *dirStream) peek() (e rawDirent, ok bool, err error) {
	for d.start >= d.end {
		n, err := unix.Getdents(d.fd, d.buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return e, false, errno(err)
		}
		if n <= 0 {
			return e, false, nil
		}
		d.start, d.end = 0, n
	}
	b := d.buf[d.start:d.end]
	if len(b) < 19 {
		return e, false, linux.EIO
	}
	e.ino = binary.NativeEndian.Uint64(b[0:])
	e.off = binary.NativeEndian.Uint64(b[8:])
	e.reclen = int(binary.NativeEndian.Uint16(b[16:]))
	e.typ = b[18]
	if e.reclen < 19 || e.reclen > len(b) {
		return e, false, linux.EIO
	}
	name := b[19:e.reclen]
	for i, c := range name {
		if c == 0 {
			name = name[:i]
			break
		}
	}
	e.name = string(name)
	return e, true, nil
}

// consume moves past e, the entry peek returned. Caller holds d.mu.
func (d *dirStream) consume(e rawDirent) {
	d.start += e.reclen
	d.pos = e.off
}

// direntSize is the encoded size of a 9P dirent: qid[13] offset[8]
// type[1] name[s].
func direntSize(name string) int { return 13 + 8 + 1 + 2 + len(name) }

// Readdir implements p9.File.Readdir on an open directory. Offsets are the
// filesystem's getdents64 d_off cookies (0 = start); each returned entry
// carries the cookie to resume after it. "." and ".." are never returned:
// the client synthesises them. It returns as many entries as fit in count
// bytes of Rreaddir payload, none at the end of the directory, and EINVAL
// when count cannot hold even the next entry (as getdents does).
//
// Dirent.Type is the entry's QID type (p9.TypeDir, TypeSymlink or
// TypeRegular for all other files), as in the 9P library.
func (f *file) Readdir(offset uint64, count uint32) (p9.Dirents, error) {
	f.ioMu.Lock()
	d := f.list
	f.ioMu.Unlock()
	if d == nil {
		if !f.isDir() {
			return nil, linux.ENOTDIR
		}
		return nil, linux.EBADF
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.seek(offset); err != nil {
		return nil, err
	}
	var out p9.Dirents
	used := 0
	for {
		e, ok, err := d.peek()
		if err != nil {
			if len(out) > 0 {
				return out, nil
			}
			return nil, err
		}
		if !ok {
			break
		}
		if e.name == "." || e.name == ".." {
			d.consume(e)
			continue
		}
		size := direntSize(e.name)
		if used+size > int(count) {
			if len(out) == 0 {
				return nil, linux.EINVAL
			}
			break
		}
		typ, known := dtQIDType(e.typ)
		if !known {
			if st, err := statxAt(d.fd, e.name); err == nil {
				typ = p9.FileMode(st.Mode).QIDType()
			}
		}
		out = append(out, p9.Dirent{
			QID:    p9.QID{Type: typ, Path: f.fs.qidPath(f.dev, e.ino)},
			Offset: e.off,
			Type:   typ,
			Name:   e.name,
		})
		used += size
		d.consume(e)
	}
	return out, nil
}

// plusStream returns the READDIRPLUS stream, opening its own descriptor
// of the directory on first use (the file need not be open).
func (f *file) plusStream() (*dirStream, error) {
	f.ioMu.Lock()
	defer f.ioMu.Unlock()
	if f.plus != nil {
		return f.plus, nil
	}
	fd, err := unix.Openat(f.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, errno(err)
	}
	f.plus = &dirStream{fd: fd, ownFd: true}
	return f.plus, nil
}

// readdirPlus answers a READDIRPLUS request (see internal/p9ext): the
// entries after cookie off, with attributes (fstatat AT_SYMLINK_NOFOLLOW)
// and xattr names (llistxattr through /proc; XattrsKnown is false where
// that is not possible), in a batch of at most maxBytes, using the same
// cookies as Readdir. With namesOnly, entries other than subdirectories
// carry their QID and, as their only attribute, the file type (Valid.Mode
// with the S_IFMT bits of Attr.Mode), both from the directory entry: no
// inode is read, except for the type where the file system does not
// record it; subdirectories carry full attributes. It fails with
// ERANGE when not even the next entry fits.
func (f *file) readdirPlus(off uint64, maxBytes uint32, namesOnly bool) ([]byte, error) {
	d, err := f.plusStreamAt(off)
	if err != nil {
		return nil, err
	}
	defer d.mu.Unlock()
	enc := p9ext.NewEncoder(maxBytes)
	eof, err := f.fillBatch(d, f.dev, enc, namesOnly)
	if err != nil {
		return nil, err
	}
	return enc.Bytes(eof), nil
}

// plusStreamAt returns the directory's READDIRPLUS stream positioned
// after cookie off, locked: the caller unlocks d.mu.
func (f *file) plusStreamAt(off uint64) (*dirStream, error) {
	if !f.isDir() {
		return nil, linux.ENOTDIR
	}
	d, err := f.plusStream()
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	if err := d.seek(off); err != nil {
		d.mu.Unlock()
		return nil, err
	}
	return d, nil
}

// fillBatch adds the entries of stream d (a directory on device dev) to
// enc until it is full or the directory ends (eof). It fails with ERANGE
// when not even the next entry fits. Caller holds d.mu.
func (f *file) fillBatch(d *dirStream, dev uint64, enc *p9ext.Encoder, namesOnly bool) (eof bool, err error) {
	var xbuf []byte
	for {
		e, ok, err := d.peek()
		if err != nil {
			if enc.Len() > 0 {
				return false, nil
			}
			return false, err
		}
		if !ok {
			return true, nil
		}
		if e.name == "." || e.name == ".." {
			d.consume(e)
			continue
		}
		var ent p9ext.Entry
		ent, xbuf = f.plusEntry(d, dev, e, namesOnly, xbuf)
		added, err := enc.Add(ent)
		if err != nil {
			// A name p9ext cannot carry (longer than NAME_MAX):
			// skip it rather than stop the listing.
			f.fs.s.log.Warn("readdirplus: skipping entry", "name", e.name, "err", err)
			d.consume(e)
			continue
		}
		if !added {
			if enc.Len() == 0 {
				return false, linux.ERANGE
			}
			return false, nil
		}
		d.consume(e)
	}
}

// plusEntry describes the entry e of stream d (see readdirPlus); xbuf is
// a buffer for llistxattr, returned for reuse.
func (f *file) plusEntry(d *dirStream, dev uint64, e rawDirent, namesOnly bool, xbuf []byte) (p9ext.Entry, []byte) {
	ent := p9ext.Entry{Name: e.name, Offset: e.off}
	typ, typeKnown := dtQIDType(e.typ)
	// Names only reads no inode, except a subdirectory's: the kernel
	// looks each one up to descend into it (find), and its attributes
	// then come with the listing instead of a walk each.
	if namesOnly && typeKnown && e.typ != unix.DT_DIR {
		mode := p9.FileMode(uint32(e.typ) << 12) // DT_* << 12 == S_IF*
		ent.QID = f.fs.qid(dev, e.ino, uint32(mode))
		ent.Type = ent.QID.Type
		ent.Valid.Mode, ent.Attr.Mode = true, mode
	} else if st, err := statxAt(d.fd, e.name); err == nil && namesOnly && st.Mode&unix.S_IFMT != unix.S_IFDIR {
		ent.QID = f.fs.qid(stxDev(&st), st.Ino, uint32(st.Mode))
		ent.Type = ent.QID.Type
		ent.Valid.Mode, ent.Attr.Mode = true, p9.FileMode(st.Mode&unix.S_IFMT)
	} else if err == nil {
		ent.Valid, ent.Attr = attrFromStatx(&st)
		ent.QID = f.fs.qid(stxDev(&st), st.Ino, uint32(st.Mode))
		ent.Type = ent.QID.Type
		if f.fs.procOK {
			var names []string
			names, xbuf, err = llistxattr(procPath(d.fd)+"/"+e.name, xbuf)
			if err == nil {
				ent.XattrsKnown, ent.Xattrs = true, names
			}
		}
	} else {
		// Removed since getdents: list it without attributes.
		ent.Type = typ
		ent.QID = p9.QID{Type: typ, Path: f.fs.qidPath(dev, e.ino)}
	}
	return ent, xbuf
}
