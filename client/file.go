package client

import (
	"context"
	"math"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/hugelgupf/p9/p9"

	"github.com/qmount/qmount/client/ninep"
)

// file is an open file: one opened fid, kept until Release.
type file struct {
	n     *node
	fid   ninep.Fid
	ref   *fidRef // fid's reference, shared with the node's operations
	flags uint32
	wrote atomic.Bool // a write went through the file
}

// newFile returns the open file of n on fid (opened with flags), and
// lends fid to n's other operations until the file is released (a
// chmod, chown or utimes by name while the file is open needs no walk).
func (n *node) newFile(fid ninep.Fid, flags uint32) *file {
	f := &file{n: n, fid: fid, ref: newFidRef(n.fsys.c, fid), flags: flags}
	writable := flags&syscall.O_ACCMODE != syscall.O_RDONLY
	n.mu.Lock()
	n.opens = append(n.opens, openRef{f.ref, writable})
	n.mu.Unlock()
	if writable {
		n.openedForWrite(1)
	}
	return f
}

// openRef is the fid of one of a node's open files. A node stops lending
// them when the name they were opened through is removed (unlink, or
// replaced by a rename): the p9 server refuses setattr and xattrs on a
// fid whose name is gone, though other links of the file remain; the
// files keep their fids for their own reads and writes.
type openRef struct {
	r        *fidRef
	writable bool
}

// holdOpen returns the fid of one of the node's open files (writable if
// asked) with a reference for the caller, or nil.
func (n *node) holdOpen(writable bool) *fidRef {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i := len(n.opens) - 1; i >= 0; i-- {
		if o := n.opens[i]; o.writable || !writable {
			o.r.refs.Add(1) // the file's own reference is still held
			return o.r
		}
	}
	return nil
}

// Read reads at off straight into dest: from the device where the
// file's extent map allows (WithDirectRead), else one Tread per MaxIO
// bytes.
func (f *file) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	ctx, cancel := f.n.fsys.reqCtx(ctx)
	defer cancel()
	if n, ok := f.n.readDirect(ctx, f.fid, dest, off); ok {
		return fuse.ReadResultData(dest[:n]), 0
	}
	total := 0
	for total < len(dest) {
		n, err := f.n.fsys.c.Read(ctx, f.fid, uint64(off)+uint64(total), dest[total:])
		if err != nil {
			if total > 0 {
				break
			}
			return nil, errno(err)
		}
		if n == 0 {
			break
		}
		total += n
	}
	return fuse.ReadResultData(dest[:total]), 0
}

// Write writes data at off; the kernel computes the offset of O_APPEND
// writes.
func (f *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	defer f.n.fsys.mutation()()
	if off < 0 {
		return 0, syscall.EINVAL
	}
	ctx, cancel := f.n.fsys.reqCtx(ctx)
	defer cancel()
	f.n.invalidate()
	total := 0
	for total < len(data) {
		n, err := f.n.fsys.c.Write(ctx, f.fid, uint64(off)+uint64(total), data[total:])
		if err != nil {
			if total > 0 {
				break
			}
			return 0, errno(err)
		}
		if n == 0 {
			break
		}
		total += n
	}
	f.wrote.Store(true)
	return uint32(total), 0
}

// Flush is called on close(2) only with WithServerLocks (files are
// otherwise opened FOPEN_NOFLUSH; see noFlush). Writes are synchronous,
// so there is nothing to send.
func (f *file) Flush(ctx context.Context) syscall.Errno { return 0 }

func (f *file) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	ctx, cancel := f.n.fsys.reqCtx(ctx)
	defer cancel()
	return errno(f.n.fsys.c.Fsync(ctx, f.fid))
}

// Release clunks the fid without waiting. A file written through it
// first has its attributes read back on it, in the background (the
// kernel does not wait for a release): the stat that often follows
// (make, rsync, tar) is then answered from the cache.
func (f *file) Release(ctx context.Context) syscall.Errno {
	n := f.n
	n.mu.Lock()
	n.opens = slices.DeleteFunc(n.opens, func(o openRef) bool { return o.r == f.ref })
	n.mu.Unlock()
	if f.flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		n.openedForWrite(-1)
	}
	if !f.wrote.Load() {
		f.ref.put()
		return 0
	}
	go func() {
		ctx, cancel := n.fsys.reqCtx(context.Background())
		defer cancel()
		n.refresh(ctx, f.fid)
		f.ref.put()
	}()
	return 0
}

func (f *file) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return f.n.Getattr(ctx, f, out)
}

// Locks (only with WithServerLocks; otherwise the kernel keeps them).

func (f *file) lockReq(owner uint64, lk *fuse.FileLock) (ninep.Lock, syscall.Errno) {
	var l ninep.Lock
	switch lk.Typ {
	case syscall.F_RDLCK:
		l.Type = p9.ReadLock
	case syscall.F_WRLCK:
		l.Type = p9.WriteLock
	case syscall.F_UNLCK:
		l.Type = p9.Unlock
	default:
		return l, syscall.EINVAL
	}
	l.Start = lk.Start
	if lk.End < math.MaxInt64 { // the kernel sends OFFSET_MAX for "to the end"
		if lk.End < lk.Start {
			return l, syscall.EINVAL
		}
		l.Length = lk.End - lk.Start + 1
	}
	l.PID = int32(lk.Pid)
	l.Client = "qmount-" + formatOwner(owner)
	return l, 0
}

func formatOwner(o uint64) string {
	const hex = "0123456789abcdef"
	var b [16]byte
	for i := 15; i >= 0; i-- {
		b[i] = hex[o&15]
		o >>= 4
	}
	return string(b[:])
}

func (f *file) Getlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) syscall.Errno {
	l, e := f.lockReq(owner, lk)
	if e != 0 {
		return e
	}
	ctx, cancel := f.n.fsys.reqCtx(ctx)
	defer cancel()
	r, err := f.n.fsys.c.GetLock(ctx, f.fid, l)
	if err == nil {
		*out = fuse.FileLock{Start: r.Start, End: math.MaxInt64, Pid: uint32(r.PID)}
		if r.Length != 0 {
			out.End = r.Start + r.Length - 1
		}
		switch r.Type {
		case p9.ReadLock:
			out.Typ = syscall.F_RDLCK
		case p9.WriteLock:
			out.Typ = syscall.F_WRLCK
		default:
			out.Typ = syscall.F_UNLCK
		}
		return 0
	}
	// Servers without Tgetlock: try to take the lock without blocking;
	// if that works there is no conflict (release it again).
	st, err := f.n.fsys.c.Lock(ctx, f.fid, l)
	if err != nil {
		return errno(err)
	}
	switch st {
	case p9.LockStatusOK:
		l.Type = p9.Unlock
		f.n.fsys.c.Lock(ctx, f.fid, l)
		*out = fuse.FileLock{Typ: syscall.F_UNLCK}
	case p9.LockStatusBlocked:
		*out = *lk
		out.Pid = 0
	default:
		return syscall.ENOLCK
	}
	return 0
}

func (f *file) setlk(ctx context.Context, owner uint64, lk *fuse.FileLock, wait bool) syscall.Errno {
	l, e := f.lockReq(owner, lk)
	if e != 0 {
		return e
	}
	backoff := time.Millisecond
	for {
		rctx, cancel := f.n.fsys.reqCtx(ctx)
		st, err := f.n.fsys.c.Lock(rctx, f.fid, l)
		cancel()
		if err != nil {
			return errno(err)
		}
		switch st {
		case p9.LockStatusOK:
			return 0
		case p9.LockStatusBlocked, p9.LockStatusGrace:
			if !wait && st == p9.LockStatusBlocked {
				return syscall.EAGAIN
			}
		default:
			return syscall.ENOLCK
		}
		select {
		case <-ctx.Done():
			return syscall.EINTR
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 200*time.Millisecond)
	}
}

func (f *file) Setlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return f.setlk(ctx, owner, lk, false)
}

func (f *file) Setlkw(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return f.setlk(ctx, owner, lk, true)
}
