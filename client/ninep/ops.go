package ninep

import (
	"context"
	"fmt"
	"syscall"

	"github.com/hugelgupf/p9/p9"

	"github.com/qmount/qmount/internal/p9ext"
)

// allocFid returns an unused fid number.
func (c *Client) allocFid() Fid {
	c.fidMu.Lock()
	defer c.fidMu.Unlock()
	if n := len(c.freeFid); n > 0 {
		f := c.freeFid[n-1]
		c.freeFid = c.freeFid[:n-1]
		return f
	}
	f := c.nextFid
	c.nextFid++
	return f
}

func (c *Client) releaseFid(f Fid) {
	c.fidMu.Lock()
	c.freeFid = append(c.freeFid, f)
	c.fidMu.Unlock()
}

// newFidCleanup is the abandon hook of a request that creates newfid.
func (c *Client) newFidCleanup(newfid Fid) func(syscall.Errno, error) {
	return func(errno syscall.Errno, err error) {
		switch {
		case err != nil: // connection gone: nothing to undo
		case errno != 0:
			c.releaseFid(newfid)
		default:
			c.Clunk(newfid)
		}
	}
}

// protoErr declares the connection broken because of a malformed reply
// and returns EIO.
func (c *Client) protoErr(what string) error {
	c.fail("malformed %s", what)
	return fmt.Errorf("%s: %w", what, syscall.EIO)
}

func (c *Client) simple(ctx context.Context, typ uint8, e *enc) ([]byte, error) {
	cl, err := c.rpc(ctx, typ, e.b, nil, nil, nil)
	if err != nil {
		return nil, err
	}
	return cl.body, nil
}

func (c *Client) empty(ctx context.Context, typ uint8, e *enc) error {
	body, err := c.simple(ctx, typ, e)
	if err != nil {
		return err
	}
	if len(body) != 0 {
		return c.protoErr(typeNames[typ+0] + " reply")
	}
	return nil
}

// Attach attaches to the server's root as uname (n_uname uid).
func (c *Client) Attach(ctx context.Context, uname, aname string, uid uint32) (Fid, p9.QID, error) {
	fid := c.allocFid()
	var e enc
	e.u32(uint32(fid))
	e.u32(uint32(NoFid))
	e.str(uname)
	e.str(aname)
	e.u32(uid)
	cl, err := c.rpc(ctx, tTattach, e.b, nil, nil, c.newFidCleanup(fid))
	if err != nil {
		if cl != nil {
			c.releaseFid(fid)
		}
		return NoFid, p9.QID{}, err
	}
	d := dec{b: cl.body}
	q := d.qid()
	if !d.done() {
		return NoFid, q, c.protoErr("Rattach")
	}
	return fid, q, nil
}

func walkBody(fid, newfid Fid, names []string) (enc, error) {
	var e enc
	if len(names) > maxWalkNames {
		return e, syscall.ENAMETOOLONG
	}
	e.u32(uint32(fid))
	e.u32(uint32(newfid))
	e.u16(uint16(len(names)))
	for _, n := range names {
		if !p9ext.ValidName(n) {
			return e, syscall.EINVAL
		}
		e.str(n)
	}
	return e, nil
}

// walkFail undoes a failed fid-creating request: if the request was
// answered (cl != nil) the fid was not created and can be reused.
func (c *Client) walkFail(cl *call, fid Fid) {
	if cl != nil {
		c.releaseFid(fid)
	}
}

// Walk walks names (at most 16, each a valid name) from fid to a new fid.
// With no names it clones fid. A walk that stops early fails with ENOENT.
func (c *Client) Walk(ctx context.Context, fid Fid, names []string) (Fid, []p9.QID, error) {
	newfid := c.allocFid()
	e, err := walkBody(fid, newfid, names)
	if err != nil {
		c.releaseFid(newfid)
		return NoFid, nil, err
	}
	cl, err := c.rpc(ctx, tTwalk, e.b, nil, nil, c.newFidCleanup(newfid))
	if err != nil {
		c.walkFail(cl, newfid)
		return NoFid, nil, err
	}
	d := dec{b: cl.body}
	n := int(d.u16())
	if n > len(names) {
		return NoFid, nil, c.protoErr("Rwalk")
	}
	qids := make([]p9.QID, n)
	for i := range qids {
		qids[i] = d.qid()
	}
	if !d.done() {
		return NoFid, nil, c.protoErr("Rwalk")
	}
	if n < len(names) {
		// The new fid is not created by a partial walk.
		c.releaseFid(newfid)
		return NoFid, nil, syscall.ENOENT
	}
	return newfid, qids, nil
}

// WalkGetattr walks like Walk and returns the attributes of the result in
// the same round trip (Twalkgetattr; Twalk + Tgetattr on servers older
// than 9P2000.L.Google.2).
func (c *Client) WalkGetattr(ctx context.Context, fid Fid, names []string) (Fid, []p9.QID, p9.AttrMask, p9.Attr, error) {
	if c.Version() < 2 {
		nf, qids, err := c.Walk(ctx, fid, names)
		if err != nil {
			return NoFid, nil, p9.AttrMask{}, p9.Attr{}, err
		}
		_, valid, attr, err := c.Getattr(ctx, nf, p9.AttrMaskAll)
		if err != nil {
			c.Clunk(nf)
			return NoFid, nil, valid, attr, err
		}
		return nf, qids, valid, attr, nil
	}
	newfid := c.allocFid()
	e, err := walkBody(fid, newfid, names)
	if err != nil {
		c.releaseFid(newfid)
		return NoFid, nil, p9.AttrMask{}, p9.Attr{}, err
	}
	cl, err := c.rpc(ctx, tTwalkgetattr, e.b, nil, nil, c.newFidCleanup(newfid))
	if err != nil {
		c.walkFail(cl, newfid)
		return NoFid, nil, p9.AttrMask{}, p9.Attr{}, err
	}
	d := dec{b: cl.body}
	valid := d.attrMask()
	attr := d.attr()
	n := int(d.u16())
	if n > len(names) {
		return NoFid, nil, valid, attr, c.protoErr("Rwalkgetattr")
	}
	qids := make([]p9.QID, n)
	for i := range qids {
		qids[i] = d.qid()
	}
	if !d.done() {
		return NoFid, nil, valid, attr, c.protoErr("Rwalkgetattr")
	}
	if n < len(names) {
		c.releaseFid(newfid)
		return NoFid, nil, valid, attr, syscall.ENOENT
	}
	return newfid, qids, valid, attr, nil
}

// Getattr returns the attributes of fid.
func (c *Client) Getattr(ctx context.Context, fid Fid, mask p9.AttrMask) (p9.QID, p9.AttrMask, p9.Attr, error) {
	var e enc
	e.u32(uint32(fid))
	e.u64(maskBits(mask))
	body, err := c.simple(ctx, tTgetattr, &e)
	if err != nil {
		return p9.QID{}, p9.AttrMask{}, p9.Attr{}, err
	}
	d := dec{b: body}
	valid := d.attrMask()
	q := d.qid()
	attr := d.attr()
	if !d.done() {
		return q, valid, attr, c.protoErr("Rgetattr")
	}
	return q, valid, attr, nil
}

// Setattr changes the attributes of fid selected by valid.
func (c *Client) Setattr(ctx context.Context, fid Fid, valid p9.SetAttrMask, a p9.SetAttr) error {
	var e enc
	e.u32(uint32(fid))
	e.u32(setMaskBits(valid))
	e.u32(uint32(a.Permissions))
	e.u32(uint32(a.UID))
	e.u32(uint32(a.GID))
	e.u64(a.Size)
	e.u64(a.ATimeSeconds)
	e.u64(a.ATimeNanoSeconds)
	e.u64(a.MTimeSeconds)
	e.u64(a.MTimeNanoSeconds)
	return c.empty(ctx, tTsetattr, &e)
}

func (c *Client) qidReply(ctx context.Context, typ uint8, e *enc, withIounit bool) (p9.QID, uint32, error) {
	body, err := c.simple(ctx, typ, e)
	if err != nil {
		return p9.QID{}, 0, err
	}
	d := dec{b: body}
	q := d.qid()
	var iounit uint32
	if withIounit {
		iounit = d.u32()
	}
	if !d.done() {
		return q, 0, c.protoErr(typeNames[typ] + " reply")
	}
	return q, iounit, nil
}

// Open opens fid with Linux open flags.
func (c *Client) Open(ctx context.Context, fid Fid, flags uint32) (p9.QID, uint32, error) {
	var e enc
	e.u32(uint32(fid))
	e.u32(flags)
	return c.qidReply(ctx, tTlopen, &e, true)
}

// Create creates and opens name in the directory fid; fid becomes the
// new open file. The owner is uid (p9.NoUID: the server's choice; sent
// with Tucreate on servers of 9P2000.L.Google.3 and later) and gid.
func (c *Client) Create(ctx context.Context, fid Fid, name string, flags uint32, perm p9.FileMode, uid p9.UID, gid p9.GID) (p9.QID, uint32, error) {
	if !p9ext.ValidName(name) {
		return p9.QID{}, 0, syscall.EINVAL
	}
	var e enc
	e.u32(uint32(fid))
	e.str(name)
	e.u32(flags)
	e.u32(uint32(perm))
	e.u32(uint32(gid))
	return c.qidReply(ctx, c.withUID(&e, tTlcreate, tTucreate, uid), &e, true)
}

// withUID appends uid and picks the Tu* message when the server has it.
func (c *Client) withUID(e *enc, plain, u uint8, uid p9.UID) uint8 {
	if uid == p9.NoUID || c.Version() < 3 {
		return plain
	}
	e.u32(uint32(uid))
	return u
}

// Read reads into buf at off (at most MaxIO bytes) and returns the count.
func (c *Client) Read(ctx context.Context, fid Fid, off uint64, buf []byte) (int, error) {
	if max := c.MaxIO(); len(buf) > max {
		buf = buf[:max]
	}
	var e enc
	e.u32(uint32(fid))
	e.u64(off)
	e.u32(uint32(len(buf)))
	cl, err := c.rpc(ctx, tTread, e.b, nil, buf, nil)
	if err != nil {
		return 0, err
	}
	return cl.n, nil
}

// Write writes data at off (at most MaxIO bytes) and returns the count.
func (c *Client) Write(ctx context.Context, fid Fid, off uint64, data []byte) (int, error) {
	if max := c.MaxIO(); len(data) > max {
		data = data[:max]
	}
	var e enc
	e.u32(uint32(fid))
	e.u64(off)
	e.u32(uint32(len(data)))
	cl, err := c.rpc(ctx, tTwrite, e.b, data, nil, nil)
	if err != nil {
		return 0, err
	}
	d := dec{b: cl.body}
	n := d.u32()
	if !d.done() || int(n) > len(data) {
		return 0, c.protoErr("Rwrite")
	}
	return int(n), nil
}

// Clunk releases fid without waiting for the reply; the fid number is
// reused once the server has answered.
func (c *Client) Clunk(fid Fid) {
	if fid == NoFid {
		return
	}
	tag, err := c.allocTag()
	if err != nil {
		return
	}
	var e enc
	e.u32(uint32(fid))
	cl, err := c.start(tag, tTclunk, e.b, nil, nil, nil)
	if err != nil {
		c.releaseTag(tag)
		return
	}
	go func() {
		<-cl.done
		if cl.err == nil {
			c.releaseFid(fid)
		}
	}()
}

// ClunkSync releases fid and waits for the server's answer (needed when
// the clunk itself does work, as for an xattr being written).
func (c *Client) ClunkSync(ctx context.Context, fid Fid) error {
	var e enc
	e.u32(uint32(fid))
	cl, err := c.rpc(ctx, tTclunk, e.b, nil, nil, func(_ syscall.Errno, err error) {
		if err == nil {
			c.releaseFid(fid)
		}
	})
	if cl != nil {
		c.releaseFid(fid)
	}
	if err != nil {
		return err
	}
	if len(cl.body) != 0 {
		return c.protoErr("Rclunk")
	}
	return nil
}

// Mkdir creates directory name in dir.
func (c *Client) Mkdir(ctx context.Context, dir Fid, name string, perm p9.FileMode, uid p9.UID, gid p9.GID) (p9.QID, error) {
	if !p9ext.ValidName(name) {
		return p9.QID{}, syscall.EINVAL
	}
	var e enc
	e.u32(uint32(dir))
	e.str(name)
	e.u32(uint32(perm))
	e.u32(uint32(gid))
	q, _, err := c.qidReply(ctx, c.withUID(&e, tTmkdir, tTumkdir, uid), &e, false)
	return q, err
}

// Symlink creates symlink name -> target in dir.
func (c *Client) Symlink(ctx context.Context, dir Fid, name, target string, uid p9.UID, gid p9.GID) (p9.QID, error) {
	if !p9ext.ValidName(name) || len(target) == 0 || len(target) > 4095 {
		return p9.QID{}, syscall.EINVAL
	}
	var e enc
	e.u32(uint32(dir))
	e.str(name)
	e.str(target)
	e.u32(uint32(gid))
	q, _, err := c.qidReply(ctx, c.withUID(&e, tTsymlink, tTusymlink, uid), &e, false)
	return q, err
}

// Link creates name in dir as a hard link to target.
func (c *Client) Link(ctx context.Context, dir, target Fid, name string) error {
	if !p9ext.ValidName(name) {
		return syscall.EINVAL
	}
	var e enc
	e.u32(uint32(dir))
	e.u32(uint32(target))
	e.str(name)
	return c.empty(ctx, tTlink, &e)
}

// Mknod creates a device, fifo or socket node.
func (c *Client) Mknod(ctx context.Context, dir Fid, name string, mode p9.FileMode, major, minor uint32, uid p9.UID, gid p9.GID) (p9.QID, error) {
	if !p9ext.ValidName(name) {
		return p9.QID{}, syscall.EINVAL
	}
	var e enc
	e.u32(uint32(dir))
	e.str(name)
	e.u32(uint32(mode))
	e.u32(major)
	e.u32(minor)
	e.u32(uint32(gid))
	q, _, err := c.qidReply(ctx, c.withUID(&e, tTmknod, tTumknod, uid), &e, false)
	return q, err
}

// Readlink returns the target of the symlink fid.
func (c *Client) Readlink(ctx context.Context, fid Fid) (string, error) {
	var e enc
	e.u32(uint32(fid))
	body, err := c.simple(ctx, tTreadlink, &e)
	if err != nil {
		return "", err
	}
	d := dec{b: body}
	s := d.str()
	if !d.done() {
		return "", c.protoErr("Rreadlink")
	}
	return s, nil
}

// Rename moves fid to name in dir.
func (c *Client) Rename(ctx context.Context, fid, dir Fid, name string) error {
	if !p9ext.ValidName(name) {
		return syscall.EINVAL
	}
	var e enc
	e.u32(uint32(fid))
	e.u32(uint32(dir))
	e.str(name)
	return c.empty(ctx, tTrename, &e)
}

// RenameAt renames olddir/oldname to newdir/newname, replacing it.
func (c *Client) RenameAt(ctx context.Context, olddir Fid, oldname string, newdir Fid, newname string) error {
	if !p9ext.ValidName(oldname) || !p9ext.ValidName(newname) {
		return syscall.EINVAL
	}
	var e enc
	e.u32(uint32(olddir))
	e.str(oldname)
	e.u32(uint32(newdir))
	e.str(newname)
	return c.empty(ctx, tTrenameat, &e)
}

// UnlinkAt removes name from dir; flags is 0 or AT_REMOVEDIR.
func (c *Client) UnlinkAt(ctx context.Context, dir Fid, name string, flags uint32) error {
	if !p9ext.ValidName(name) {
		return syscall.EINVAL
	}
	var e enc
	e.u32(uint32(dir))
	e.str(name)
	e.u32(flags)
	return c.empty(ctx, tTunlinkat, &e)
}

// Readdir reads entries of the open directory fid after the cookie off,
// in at most count bytes. "." and ".." are dropped; any other invalid
// name breaks the connection.
func (c *Client) Readdir(ctx context.Context, fid Fid, off uint64, count uint32) ([]p9.Dirent, error) {
	if max := uint32(c.MaxIO()); count > max {
		count = max
	}
	var e enc
	e.u32(uint32(fid))
	e.u64(off)
	e.u32(count)
	body, err := c.simple(ctx, tTreaddir, &e)
	if err != nil {
		return nil, err
	}
	d := dec{b: body}
	n := d.u32()
	if d.bad || int(n) != len(d.b) || n > count {
		return nil, c.protoErr("Rreaddir")
	}
	var out []p9.Dirent
	for len(d.b) > 0 {
		var de p9.Dirent
		de.QID = d.qid()
		de.Offset = d.u64()
		de.Type = p9.QIDType(d.u8())
		de.Name = d.str()
		if d.bad {
			return nil, c.protoErr("Rreaddir entry")
		}
		if de.Name == "." || de.Name == ".." {
			continue
		}
		if !p9ext.ValidName(de.Name) {
			return nil, c.protoErr("Rreaddir entry name")
		}
		out = append(out, de)
	}
	return out, nil
}

// Statfs returns file system statistics.
func (c *Client) Statfs(ctx context.Context, fid Fid) (p9.FSStat, error) {
	var e enc
	e.u32(uint32(fid))
	body, err := c.simple(ctx, tTstatfs, &e)
	if err != nil {
		return p9.FSStat{}, err
	}
	d := dec{b: body}
	var s p9.FSStat
	s.Type = d.u32()
	s.BlockSize = d.u32()
	s.Blocks = d.u64()
	s.BlocksFree = d.u64()
	s.BlocksAvailable = d.u64()
	s.Files = d.u64()
	s.FilesFree = d.u64()
	s.FSID = d.u64()
	s.NameLength = d.u32()
	if !d.done() {
		return s, c.protoErr("Rstatfs")
	}
	return s, nil
}

// Fsync flushes the open file fid to stable storage.
func (c *Client) Fsync(ctx context.Context, fid Fid) error {
	var e enc
	e.u32(uint32(fid))
	return c.empty(ctx, tTfsync, &e)
}

// XattrWalk prepares reading xattr name of fid ("" lists the names) into a
// new fid and returns it with the value's size.
func (c *Client) XattrWalk(ctx context.Context, fid Fid, name string) (Fid, uint64, error) {
	if len(name) > 255+64 {
		return NoFid, 0, syscall.ERANGE
	}
	newfid := c.allocFid()
	var e enc
	e.u32(uint32(fid))
	e.u32(uint32(newfid))
	e.str(name)
	cl, err := c.rpc(ctx, tTxattrwalk, e.b, nil, nil, c.newFidCleanup(newfid))
	if err != nil {
		c.walkFail(cl, newfid)
		return NoFid, 0, err
	}
	d := dec{b: cl.body}
	size := d.u64()
	if !d.done() {
		return NoFid, 0, c.protoErr("Rxattrwalk")
	}
	return newfid, size, nil
}

// XattrCreate turns fid into a handle for writing xattr name of size
// bytes; the value is written with Write and takes effect at the clunk.
func (c *Client) XattrCreate(ctx context.Context, fid Fid, name string, size uint64, flags uint32) error {
	var e enc
	e.u32(uint32(fid))
	e.str(name)
	e.u64(size)
	e.u32(flags)
	return c.empty(ctx, tTxattrcreate, &e)
}

// ReadAll reads fid from offset 0 until size bytes or EOF, refusing more
// than max bytes.
func (c *Client) ReadAll(ctx context.Context, fid Fid, size uint64, max int) ([]byte, error) {
	if size > uint64(max) {
		return nil, syscall.E2BIG
	}
	buf := make([]byte, size)
	off := 0
	for off < len(buf) {
		n, err := c.Read(ctx, fid, uint64(off), buf[off:])
		if err != nil {
			return nil, err
		}
		if n == 0 {
			break
		}
		off += n
	}
	return buf[:off], nil
}

// GetXattr returns the value of xattr name of fid (at most max bytes,
// else ERANGE).
func (c *Client) GetXattr(ctx context.Context, fid Fid, name string, max int) ([]byte, error) {
	xf, size, err := c.XattrWalk(ctx, fid, name)
	if err != nil {
		return nil, err
	}
	defer c.Clunk(xf)
	if size > uint64(max) {
		return nil, syscall.ERANGE
	}
	return c.ReadAll(ctx, xf, size, max)
}

// ListXattrs returns the names of fid's xattrs.
func (c *Client) ListXattrs(ctx context.Context, fid Fid) ([]string, error) {
	b, err := c.GetXattr(ctx, fid, "", 64<<10)
	if err != nil {
		return nil, err
	}
	var names []string
	start := 0
	for i, ch := range b {
		if ch == 0 {
			if i > start {
				names = append(names, string(b[start:i]))
			}
			start = i + 1
		}
	}
	if start != len(b) {
		return nil, c.protoErr("xattr list")
	}
	return names, nil
}

// SetXattr sets xattr name of fid to value with flags (XATTR_CREATE,
// XATTR_REPLACE).
func (c *Client) SetXattr(ctx context.Context, fid Fid, name string, value []byte, flags uint32) error {
	xf, _, err := c.Walk(ctx, fid, nil)
	if err != nil {
		return err
	}
	if err := c.XattrCreate(ctx, xf, name, uint64(len(value)), flags); err != nil {
		c.Clunk(xf)
		return err
	}
	for off := 0; off < len(value); {
		n, err := c.Write(ctx, xf, uint64(off), value[off:])
		if err == nil && n == 0 {
			err = syscall.EIO
		}
		if err != nil {
			c.Clunk(xf)
			return err
		}
		off += n
	}
	return c.ClunkSync(ctx, xf)
}

// RemoveXattr removes xattr name of fid (an empty XATTR_REPLACE create).
func (c *Client) RemoveXattr(ctx context.Context, fid Fid, name string) error {
	return c.SetXattr(ctx, fid, name, nil, 2 /* XATTR_REPLACE */)
}

// Lock is one POSIX record lock request or answer.
type Lock struct {
	Type   p9.LockType
	Flags  p9.LockFlags
	Start  uint64
	Length uint64
	PID    int32
	Client string
}

// Lock takes or releases a POSIX lock on the open file fid.
func (c *Client) Lock(ctx context.Context, fid Fid, l Lock) (p9.LockStatus, error) {
	var e enc
	e.u32(uint32(fid))
	e.u8(uint8(l.Type))
	e.u32(uint32(l.Flags))
	e.u64(l.Start)
	e.u64(l.Length)
	e.u32(uint32(l.PID))
	e.str(l.Client)
	body, err := c.simple(ctx, tTlock, &e)
	if err != nil {
		return p9.LockStatusError, err
	}
	d := dec{b: body}
	st := p9.LockStatus(d.u8())
	if !d.done() || st > p9.LockStatusGrace {
		return p9.LockStatusError, c.protoErr("Rlock")
	}
	return st, nil
}

// GetLock tests for a lock conflicting with l on the open file fid.
func (c *Client) GetLock(ctx context.Context, fid Fid, l Lock) (Lock, error) {
	var e enc
	e.u32(uint32(fid))
	e.u8(uint8(l.Type))
	e.u64(l.Start)
	e.u64(l.Length)
	e.u32(uint32(l.PID))
	e.str(l.Client)
	body, err := c.simple(ctx, tTgetlock, &e)
	if err != nil {
		return Lock{}, err
	}
	d := dec{b: body}
	var r Lock
	r.Type = p9.LockType(d.u8())
	r.Start = d.u64()
	r.Length = d.u64()
	r.PID = int32(d.u32())
	r.Client = d.str()
	if !d.done() || r.Type > p9.Unlock {
		return Lock{}, c.protoErr("Rgetlock")
	}
	return r, nil
}
