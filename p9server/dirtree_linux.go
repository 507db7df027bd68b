//go:build linux

package p9server

import (
	"github.com/hugelgupf/p9/linux"
	"github.com/qmount/qmount/internal/p9ext"
	"golang.org/x/sys/unix"
)

// readdirTree answers a READDIRTREE request (see internal/p9ext): the
// listings, with attributes as in readdirPlus (or namesOnly), of the next maxDirs
// subdirectories after cookie off, in at most maxBytes. It stops before
// a subdirectory whose complete listing does not fit, unless it is the
// first (then listed in part, so the client makes progress).
func (f *file) readdirTree(off uint64, maxBytes uint32, maxDirs int, namesOnly bool) ([]byte, error) {
	d, err := f.plusStreamAt(off)
	if err != nil {
		return nil, err
	}
	defer d.mu.Unlock()
	t := p9ext.NewTreeEncoder(maxBytes)
	for t.Len() < maxDirs {
		e, ok, err := d.peek()
		if err != nil {
			if t.Len() > 0 {
				break
			}
			return nil, err
		}
		if !ok {
			return t.Bytes(true), nil
		}
		if !f.subdirEntry(d, e) {
			d.consume(e)
			continue
		}
		added, err := f.addSubListing(t, d, e, namesOnly)
		if err != nil {
			// Removed meanwhile, not readable, or a name p9ext
			// cannot carry: the client lists it itself if it
			// must.
			d.consume(e)
			continue
		}
		if !added {
			break
		}
		d.consume(e)
	}
	return t.Bytes(false), nil
}

// subdirEntry reports whether e, an entry of stream d, is a directory.
func (f *file) subdirEntry(d *dirStream, e rawDirent) bool {
	if e.name == "." || e.name == ".." {
		return false
	}
	if e.typ != unix.DT_UNKNOWN {
		return e.typ == unix.DT_DIR
	}
	st, err := statxAt(d.fd, e.name)
	return err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR
}

// addSubListing lists the subdirectory e of stream d into t, and
// reports whether it fitted (complete, or in part as t's first record).
func (f *file) addSubListing(t *p9ext.TreeEncoder, d *dirStream, e rawDirent, namesOnly bool) (bool, error) {
	room := t.Room(e.name)
	if room <= 0 {
		return false, nil
	}
	pfd, err := f.fs.openPath(d.fd, e.name)
	if err != nil {
		return false, errno(err)
	}
	defer unix.Close(pfd)
	fd, err := unix.Openat(pfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, errno(err)
	}
	sub := &dirStream{fd: fd, ownFd: true}
	defer sub.close()
	st, err := statxFd(fd)
	if err != nil {
		return false, err
	}
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if err := sub.seek(0); err != nil {
		return false, err
	}
	dev := stxDev(&st)
	enc := p9ext.NewEncoder(uint32(room))
	eof, err := f.fillBatch(sub, dev, enc, namesOnly)
	if err == linux.ERANGE || (err == nil && !eof && t.Len() > 0) {
		return false, nil // does not fit whole: the next request lists it
	}
	if err != nil {
		return false, err
	}
	return t.Add(e.name, e.off, f.fs.qid(dev, st.Ino, uint32(st.Mode)), enc.Bytes(eof))
}
