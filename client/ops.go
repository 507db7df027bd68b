package client

import (
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/hugelgupf/p9/p9"

	"github.com/qmount/qmount/client/ninep"
	"github.com/qmount/qmount/internal/p9ext"
)

const atRemoveDir = 0x200

// chmodXattr is p9server's virtual xattr that sets all mode bits
// including set-user-ID, set-group-ID and sticky, which the p9 library
// masks out of Tsetattr, Tlcreate and Tmkdir.
const chmodXattr = "qmount.chmod"

func (f *fsys) chmodSetID(ctx context.Context, fid ninep.Fid, mode uint32) error {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], mode&07777)
	err := f.c.SetXattr(ctx, fid, chmodXattr, b[:], 0)
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS) {
		// Not our server: set what 9P can.
		return f.c.Setattr(ctx, fid, p9.SetAttrMask{Permissions: true}, p9.SetAttr{Permissions: p9.FileMode(mode & 01777)})
	}
	return err
}

// Lookup finds name with one Twalkgetattr.
func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if e := nameErr(name); e != 0 {
		return nil, e
	}
	ctx, cancel := n.fsys.reqCtx(ctx)
	defer cancel()
	n.adoptListing(ctx)
	if ch, e, ok := n.lookupListed(ctx, name, out); ok {
		return ch, e
	}
	if n.missed() {
		n.prefetch(ctx)
		if ch, e, ok := n.lookupListed(ctx, name, out); ok {
			return ch, e
		}
	}
	dfidRef, err := n.holdFid(ctx)
	if err != nil {
		return nil, errno(err)
	}
	defer dfidRef.put()
	dfid := dfidRef.fid
	nf, qids, valid, attr, err := n.fsys.c.WalkGetattr(ctx, dfid, []string{name})
	if err != nil {
		return nil, errno(err)
	}
	if !valid.Mode {
		n.fsys.c.Clunk(nf)
		return nil, syscall.EIO
	}
	child := n.fsys.newChild(ctx, n, name, qids[0], valid, attr, nf)
	child.fillEntry(out, &attr)
	return child.EmbeddedInode(), 0
}

// lookupListed answers a lookup from the directory's listing, if it can
// (ok).
func (n *node) lookupListed(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno, bool) {
	e, absent := n.listed(name)
	if absent {
		return nil, syscall.ENOENT, true
	}
	if e == nil {
		return nil, 0, false
	}
	return n.fromEntry(ctx, name, e, out), 0, true
}

// Getattr answers from the node's cache, or asks the server.
func (n *node) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	ctx, cancel := n.fsys.reqCtx(ctx)
	defer cancel()
	fid := ninep.NoFid
	if f, ok := fh.(*file); ok {
		fid = f.fid
	}
	a, err := n.cachedAttr(ctx, fid)
	if err != nil {
		return errno(err)
	}
	n.fsys.fillAttr(&out.Attr, n.StableAttr().Ino, &a)
	out.SetTimeout(n.fsys.cfg.attrTimeout)
	return 0
}

// Setattr changes mode, owner, size and times, then reads them back.
func (n *node) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	defer n.fsys.mutation()()
	if n.fsys.cfg.readOnly {
		return syscall.EROFS
	}
	ctx, cancel := n.fsys.reqCtx(ctx)
	defer cancel()
	var mask p9.SetAttrMask
	var sa p9.SetAttr
	setID := false
	if m, ok := in.GetMode(); ok {
		if m&06000 != 0 {
			setID = true // 9P's Tsetattr drops set-ID bits: see chmodSetID
		} else {
			mask.Permissions = true
			sa.Permissions = p9.FileMode(m & 07777)
		}
	}
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if uok || gok {
		if n.fsys.cfg.idMap != nil {
			uid, gid = n.fsys.cfg.idMap.ToGuest(uid, gid)
		}
		sa.UID, sa.GID = p9.NoUID, p9.NoGID
		if uok {
			mask.UID, sa.UID = true, p9.UID(uid)
		}
		if gok {
			mask.GID, sa.GID = true, p9.GID(gid)
		}
	}
	if sz, ok := in.GetSize(); ok {
		mask.Size, sa.Size = true, sz
	}
	if in.Valid&fuse.FATTR_ATIME != 0 {
		mask.ATime = true
		if in.Valid&fuse.FATTR_ATIME_NOW == 0 {
			mask.ATimeNotSystemTime = true
			sa.ATimeSeconds, sa.ATimeNanoSeconds = in.Atime, uint64(in.Atimensec)
		}
	}
	if in.Valid&fuse.FATTR_MTIME != 0 {
		mask.MTime = true
		if in.Valid&fuse.FATTR_MTIME_NOW == 0 {
			mask.MTimeNotSystemTime = true
			sa.MTimeSeconds, sa.MTimeNanoSeconds = in.Mtime, uint64(in.Mtimensec)
		}
	}
	if in.Valid&fuse.FATTR_CTIME != 0 {
		mask.CTime = true
	}
	fid := ninep.NoFid
	if f, ok := fh.(*file); ok {
		fid = f.fid
	}
	if fid == ninep.NoFid {
		r, err := n.holdFidFor(ctx, mask.Size)
		if err != nil {
			return errno(err)
		}
		defer r.put()
		fid = r.fid
	}
	if mask.Size {
		defer n.dataChange()()
	}
	if !mask.Empty() {
		n.invalidate()
		if err := n.fsys.c.Setattr(ctx, fid, mask, sa); err != nil {
			return errno(err)
		}
	}
	if setID {
		n.invalidate()
		m, _ := in.GetMode()
		if err := n.fsys.chmodSetID(ctx, fid, m); err != nil {
			return errno(err)
		}
	}
	a, err := n.refresh(ctx, fid)
	if err != nil {
		return errno(err)
	}
	n.fsys.fillAttr(&out.Attr, n.StableAttr().Ino, &a)
	out.SetTimeout(n.fsys.cfg.attrTimeout)
	return 0
}

// openFlags keeps the open flags the server should see: the access mode
// and O_DSYNC. O_APPEND is left to the kernel, which sends the offset of
// the end of the file (the file changes only through this mount), so the
// server's fid can also serve mmap writeback at any offset.
func openFlags(flags uint32) uint32 {
	return flags & (syscall.O_ACCMODE | syscall.O_DSYNC)
}

// Open opens the file on a new fid, kept until Release.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_TRUNC != 0 {
		defer n.fsys.mutation()()
	}
	if n.fsys.cfg.readOnly && (flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0) {
		return nil, 0, syscall.EROFS
	}
	ctx, cancel := n.fsys.reqCtx(ctx)
	defer cancel()
	fid, err := n.openFid(ctx)
	if err != nil {
		return nil, 0, errno(err)
	}
	// A file to be read from the device gets its extent map while it is
	// opened (one round trip less before the first read).
	var mapped sync.WaitGroup
	if flags&syscall.O_ACCMODE == syscall.O_RDONLY && flags&syscall.O_TRUNC == 0 && n.StableAttr().Mode == syscall.S_IFREG {
		if d := n.fsys.data(n.StableAttr().Ino); d != nil {
			mapped.Go(func() { n.extentMap(ctx, d, fid, 0) })
		}
	}
	_, _, err = n.fsys.c.Open(ctx, fid, openFlags(flags))
	mapped.Wait()
	if err != nil {
		n.fsys.c.Clunk(fid)
		return nil, 0, errno(err)
	}
	if flags&syscall.O_TRUNC != 0 {
		n.invalidate()
		defer n.dataChange()()
		if err := n.fsys.c.Setattr(ctx, fid, p9.SetAttrMask{Size: true}, p9.SetAttr{}); err != nil {
			n.fsys.c.Clunk(fid)
			return nil, 0, errno(err)
		}
	}
	return n.newFile(fid, flags), n.keepCache() | n.fsys.noFlush(), 0
}

// noFlush is FOPEN_NOFLUSH unless locks are the server's: close(2) then
// sends no FLUSH. Writes are synchronous (their errors reach write(2)),
// so a flush has nothing to do; the kernel still writes back shared
// mmap pages at close and munmap. With WithServerLocks a FLUSH releases
// the closer's locks on the server.
func (f *fsys) noFlush() uint32 {
	if f.cfg.serverLocks {
		return 0
	}
	return fuse.FOPEN_NOFLUSH
}

// keepCache decides whether the kernel may keep the file's cached pages:
// yes when its mtime and size are those seen at the previous open.
func (n *node) keepCache() uint32 {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.attrValid {
		n.opened = false
		return 0
	}
	stamp := [3]uint64{n.attr.MTimeSeconds, n.attr.MTimeNanoSeconds, n.attr.Size}
	keep := n.opened && stamp == n.openStamp
	n.openStamp, n.opened = stamp, true
	if keep {
		return fuse.FOPEN_KEEP_CACHE
	}
	return 0
}

// Create makes and opens a regular file (Tlcreate on a clone of the
// directory fid), then reads its attributes.
func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	defer n.fsys.mutation()()
	if n.fsys.cfg.readOnly {
		return nil, nil, 0, syscall.EROFS
	}
	ctx, cancel := n.fsys.reqCtx(ctx)
	defer cancel()
	c := n.fsys.c
	dfidRef, err := n.holdFid(ctx)
	if err != nil {
		return nil, nil, 0, errno(err)
	}
	defer dfidRef.put()
	dfid := dfidRef.fid
	fid, _, err := c.Walk(ctx, dfid, nil)
	if err != nil {
		return nil, nil, 0, errno(err)
	}
	n.invalidate()
	uid, gid := n.fsys.caller(ctx)
	qid, _, err := c.Create(ctx, fid, name, openFlags(flags), p9.FileMode(mode&07777), uid, gid)
	if err != nil {
		n.listDrop()
		c.Clunk(fid)
		return nil, nil, 0, errno(err)
	}
	if mode&06000 != 0 {
		if err := n.fsys.chmodSetID(ctx, fid, mode); err != nil {
			n.listDrop()
			c.Clunk(fid)
			return nil, nil, 0, errno(err)
		}
	}
	wait := n.refreshBehind(ctx)
	_, valid, attr, err := c.Getattr(ctx, fid, p9.AttrMaskAll)
	wait()
	if err != nil {
		n.listDrop()
		c.Clunk(fid)
		return nil, nil, 0, errno(err)
	}
	child := n.fsys.newChild(ctx, n, name, qid, valid, attr, ninep.NoFid)
	n.born(ctx, name, child)
	child.fillEntry(out, &attr)
	child.keepCache()
	return child.EmbeddedInode(), child.newFile(fid, flags), n.fsys.noFlush(), 0
}

// made finishes Mkdir, Symlink and Mknod: one Twalkgetattr for the
// attributes of what was made.
func (n *node) made(ctx context.Context, dfid ninep.Fid, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	wait := n.refreshBehind(ctx)
	nf, qids, valid, attr, err := n.fsys.c.WalkGetattr(ctx, dfid, []string{name})
	wait()
	if err != nil {
		n.listDrop()
		return nil, errno(err)
	}
	child := n.fsys.newChild(ctx, n, name, qids[0], valid, attr, nf)
	if child.IsDir() {
		child.listNew()
	}
	n.born(ctx, name, child)
	child.fillEntry(out, &attr)
	return child.EmbeddedInode(), 0
}

// aclDefault is the xattr of a directory's default ACL, which new
// entries inherit as xattrs of their own.
const aclDefault = "system.posix_acl_default"

// born records child, just made as name in n: in n's listing, and, when
// n has no default ACL, that the child has no xattrs (the kernel asks
// for security.capability before every write of a file; this answers
// it without a request). n's xattr names are read once if not known.
func (n *node) born(ctx context.Context, name string, child *node) {
	if names, err := n.xattrNames(ctx); err == nil && !slices.Contains(names, aclDefault) {
		child.setXattrNames([]string{})
	}
	n.listSet(name, child.entry(), false)
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	defer n.fsys.mutation()()
	if n.fsys.cfg.readOnly {
		return nil, syscall.EROFS
	}
	ctx, cancel := n.fsys.reqCtx(ctx)
	defer cancel()
	dfidRef, err := n.holdFid(ctx)
	if err != nil {
		return nil, errno(err)
	}
	defer dfidRef.put()
	dfid := dfidRef.fid
	n.invalidate()
	uid, gid := n.fsys.caller(ctx)
	if _, err := n.fsys.c.Mkdir(ctx, dfid, name, p9.FileMode(mode&07777), uid, gid); err != nil {
		n.listDrop()
		return nil, errno(err)
	}
	if mode&06000 != 0 {
		fid, _, err := n.fsys.c.Walk(ctx, dfid, []string{name})
		if err != nil {
			n.listDrop()
			return nil, errno(err)
		}
		err = n.fsys.chmodSetID(ctx, fid, mode)
		n.fsys.c.Clunk(fid)
		if err != nil {
			n.listDrop()
			return nil, errno(err)
		}
	}
	return n.made(ctx, dfid, name, out)
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	defer n.fsys.mutation()()
	if n.fsys.cfg.readOnly {
		return nil, syscall.EROFS
	}
	ctx, cancel := n.fsys.reqCtx(ctx)
	defer cancel()
	dfidRef, err := n.holdFid(ctx)
	if err != nil {
		return nil, errno(err)
	}
	defer dfidRef.put()
	dfid := dfidRef.fid
	n.invalidate()
	uid, gid := n.fsys.caller(ctx)
	if _, err := n.fsys.c.Symlink(ctx, dfid, name, target, uid, gid); err != nil {
		n.listDrop()
		return nil, errno(err)
	}
	return n.made(ctx, dfid, name, out)
}

func (n *node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	defer n.fsys.mutation()()
	if n.fsys.cfg.readOnly {
		return nil, syscall.EROFS
	}
	ctx, cancel := n.fsys.reqCtx(ctx)
	defer cancel()
	dfidRef, err := n.holdFid(ctx)
	if err != nil {
		return nil, errno(err)
	}
	defer dfidRef.put()
	dfid := dfidRef.fid
	major, minor := decodeDev(dev)
	n.invalidate()
	uid, gid := n.fsys.caller(ctx)
	if _, err := n.fsys.c.Mknod(ctx, dfid, name, p9.FileMode(mode), major, minor, uid, gid); err != nil {
		n.listDrop()
		return nil, errno(err)
	}
	return n.made(ctx, dfid, name, out)
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	defer n.fsys.mutation()()
	if n.fsys.cfg.readOnly {
		return nil, syscall.EROFS
	}
	tn, ok := target.(*node)
	if !ok {
		return nil, syscall.EXDEV
	}
	ctx, cancel := n.fsys.reqCtx(ctx)
	defer cancel()
	dfidRef, err := n.holdFid(ctx)
	if err != nil {
		return nil, errno(err)
	}
	defer dfidRef.put()
	dfid := dfidRef.fid
	tfidRef, err := tn.holdFid(ctx)
	if err != nil {
		return nil, errno(err)
	}
	defer tfidRef.put()
	tfid := tfidRef.fid
	n.invalidate()
	tn.invalidate()
	if err := n.fsys.c.Link(ctx, dfid, tfid, name); err != nil {
		n.listDrop()
		return nil, errno(err)
	}
	a, err := tn.refresh(ctx, tfid)
	if err != nil {
		n.listDrop()
		return nil, errno(err)
	}
	n.listSet(name, tn.entry(), false)
	tn.fillEntry(out, &a)
	return tn.EmbeddedInode(), 0
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	n.mu.Lock()
	t := n.target
	n.mu.Unlock()
	if t != "" {
		return []byte(t), 0
	}
	ctx, cancel := n.fsys.reqCtx(ctx)
	defer cancel()
	fidRef, err := n.holdFid(ctx)
	if err != nil {
		return nil, errno(err)
	}
	defer fidRef.put()
	fid := fidRef.fid
	t, err = n.fsys.c.Readlink(ctx, fid)
	if err != nil {
		return nil, errno(err)
	}
	n.mu.Lock()
	n.target = t // a symlink's target never changes
	n.mu.Unlock()
	return []byte(t), 0
}

// removed updates the caches after name left directory n.
func (n *node) removed(name string, isDir bool) {
	n.invalidate()
	ch := n.GetChild(name)
	if ch == nil {
		return
	}
	cn, ok := ch.Operations().(*node)
	if !ok {
		return
	}
	cn.mu.Lock()
	last := isDir || !cn.attrValid || cn.attr.NLink <= 1
	cn.opens = nil // see openRef
	cn.mu.Unlock()
	// The server's fid followed the removed name and is unusable now;
	// if other links remain, the next operation walks through one.
	if !cn.IsRoot() {
		cn.fids.release()
	}
	cn.invalidate()
	if last {
		n.fsys.markDead(cn)
	}
}

// nameErr checks a name the kernel passed for creation.
func nameErr(name string) syscall.Errno {
	if len(name) > p9ext.MaxNameLen {
		return syscall.ENAMETOOLONG
	}
	if !p9ext.ValidName(name) {
		return syscall.EINVAL
	}
	return 0
}

func (n *node) unlink(ctx context.Context, name string, flags uint32) syscall.Errno {
	defer n.fsys.mutation()()
	if n.fsys.cfg.readOnly {
		return syscall.EROFS
	}
	ctx, cancel := n.fsys.reqCtx(ctx)
	defer cancel()
	dfidRef, err := n.holdFid(ctx)
	if err != nil {
		return errno(err)
	}
	defer dfidRef.put()
	dfid := dfidRef.fid
	if err := n.fsys.c.UnlinkAt(ctx, dfid, name, flags); err != nil {
		n.listDrop()
		return errno(err)
	}
	n.listSet(name, nil, true)
	n.removed(name, flags&atRemoveDir != 0)
	return 0
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	return n.unlink(ctx, name, 0)
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return n.unlink(ctx, name, atRemoveDir)
}

// Rename moves name to newParent/newName with Trenameat. RENAME_NOREPLACE
// is checked with a walk first; RENAME_EXCHANGE is not in 9P2000.L.
func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	defer n.fsys.mutation()()
	if n.fsys.cfg.readOnly {
		return syscall.EROFS
	}
	const renameNoReplace, renameExchange = 1, 2
	if flags&^renameNoReplace != 0 {
		return syscall.EINVAL
	}
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	ctx, cancel := n.fsys.reqCtx(ctx)
	defer cancel()
	c := n.fsys.c
	ofidRef, err := n.holdFid(ctx)
	if err != nil {
		return errno(err)
	}
	defer ofidRef.put()
	ofid := ofidRef.fid
	nfidRef, err := np.holdFid(ctx)
	if err != nil {
		return errno(err)
	}
	defer nfidRef.put()
	nfid := nfidRef.fid
	if flags&renameNoReplace != 0 {
		f, _, err := c.Walk(ctx, nfid, []string{newName})
		if err == nil {
			c.Clunk(f)
			return syscall.EEXIST
		}
		if !errors.Is(err, syscall.ENOENT) {
			return errno(err)
		}
	}
	var target *node
	if ch := np.GetChild(newName); ch != nil {
		target, _ = ch.Operations().(*node)
	}
	var moved *node
	if ch := n.GetChild(name); ch != nil {
		moved, _ = ch.Operations().(*node)
	}
	n.invalidate()
	np.invalidate()
	if err := c.RenameAt(ctx, ofid, name, nfid, newName); err != nil {
		n.listDrop()
		np.listDrop()
		return errno(err)
	}
	if n != np || name != newName {
		n.listSet(name, nil, true)
		np.listSet(newName, nil, false)
	}
	if moved != nil {
		moved.invalidate() // ctime
	}
	if target != nil && target != moved {
		target.mu.Lock()
		last := target.IsDir() || !target.attrValid || target.attr.NLink <= 1
		target.opens = nil // see openRef
		target.mu.Unlock()
		target.invalidate()
		if last {
			n.fsys.markDead(target)
		}
	}
	return 0
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	ctx, cancel := n.fsys.reqCtx(ctx)
	defer cancel()
	fidRef, err := n.holdFid(ctx)
	if err != nil {
		return errno(err)
	}
	defer fidRef.put()
	fid := fidRef.fid
	st, err := n.fsys.c.Statfs(ctx, fid)
	if err != nil {
		return errno(err)
	}
	out.Blocks, out.Bfree, out.Bavail = st.Blocks, st.BlocksFree, st.BlocksAvailable
	out.Files, out.Ffree = st.Files, st.FilesFree
	out.Bsize, out.Frsize, out.NameLen = st.BlockSize, st.BlockSize, st.NameLength
	return 0
}

// Fsync without an open file (the kernel always passes one for files).
func (n *node) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	if f, ok := fh.(*file); ok {
		return f.Fsync(ctx, flags)
	}
	return 0
}
