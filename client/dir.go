package client

import (
	"context"
	"errors"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/qmount/qmount/client/ninep"
	"github.com/qmount/qmount/internal/p9ext"
)

// OpendirHandle opens a directory stream. No request is sent until the
// first read.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	var ff uint32
	if n.fsys.cfg.dirCache {
		ff = fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE
	}
	return &dirHandle{n: n, rfid: ninep.NoFid}, ff, 0
}

// synthEntries is the number of synthetic entries ("." and "..") before
// the server's, which never lists them.
const synthEntries = 2

// dirHandle reads a directory in batches: READDIRPLUS (p9ext) when the
// server has it, else Treaddir on an opened fid. Offsets are the
// server's cookies (plus synthEntries), so they stay valid across calls
// and seeks.
type dirHandle struct {
	n *node

	mu     sync.Mutex
	synth  int    // synthetic entries already returned
	cookie uint64 // resume after this cookie
	buf    []p9ext.Entry
	pos    int
	eof    bool
	last   *p9ext.Entry // the entry Readdirent returned last
	rfid   ninep.Fid    // opened fid for Treaddir
	shared bool         // buf is the node's listing (node.seqAfter)
	// given counts the entries returned since the last batch, plus those
	// the kernel asked attributes for (READDIRPLUS).
	given, plus int
	// fullBytes bounds the next batch with attributes: firstBatchBytes,
	// doubled after each.
	fullBytes int
}

// firstBatchBytes bounds a listing's first batch, which carries
// attributes: the kernel asks for them with its first readdir requests
// of a directory only (READDIRPLUS_AUTO), unless it sees lookups. Later
// batches with attributes double in size.
const firstBatchBytes = 32 << 10

// After the first batch, a listing goes on with attributes only if the
// kernel asked for the attributes of more than a quarter of the entries
// returned since the last batch (ls -l, find -ls read all names first;
// a program interleaving readdir and stat does not). Otherwise batches
// carry names and types only (find), so the server reads no inode;
// lookups of those names are answered by the server, or by the whole
// listing with attributes read after a few (node.prefetch).

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch d.synth {
	case 0:
		d.synth = 1
		d.last = nil
		return &fuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: d.n.StableAttr().Ino, Off: 1}, 0
	case 1:
		d.synth = 2
		d.last = nil
		ino := d.n.StableAttr().Ino
		if _, p := d.n.Parent(); p != nil {
			ino = p.StableAttr().Ino
		}
		return &fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: ino, Off: 2}, 0
	}
	if d.pos >= len(d.buf) {
		if d.eof {
			return nil, 0
		}
		if e := d.fill(ctx); e != 0 {
			return nil, e
		}
		if d.pos >= len(d.buf) {
			return nil, 0
		}
	}
	e := &d.buf[d.pos]
	d.pos++
	d.given++
	d.cookie = e.Offset
	d.last = e
	mode := uint32(qidMode(e.QID.Type))
	if e.Valid.Mode {
		mode = uint32(e.Attr.Mode)
	}
	return &fuse.DirEntry{Name: e.Name, Mode: mode, Ino: e.QID.Path, Off: e.Offset + synthEntries}, 0
}

// fill fetches the next batch after d.cookie.
func (d *dirHandle) fill(ctx context.Context) syscall.Errno {
	f := d.n.fsys
	ctx, cancel := f.reqCtx(ctx)
	defer cancel()
	if d.shared {
		d.buf, d.shared = nil, false // never append to a node's listing
	}
	d.buf, d.pos = d.buf[:0], 0
	if d.fromListing(ctx) {
		return 0
	}
	if f.plus.Load() >= 0 {
		start := d.cookie
		first := start == 0
		names := !first && d.plus*4 <= d.given && f.names.Load() >= 0
		d.plus, d.given = 0, 0
		mod := d.n.listEpoch()
		if first {
			d.fullBytes = firstBatchBytes
		}
		b, err := d.readPlus(ctx, d.fullBytes, names)
		if err != nil && names && notSupported(err) {
			// An older server, or this directory failed (removed
			// while read): only the former turns names off.
			names = false
			if b, err = d.readPlus(ctx, d.fullBytes, false); err == nil {
				f.names.Store(-1)
				f.log.Debug("server has no names-only READDIRPLUS")
			}
		}
		if !names {
			d.fullBytes *= 2
		}
		if err == nil {
			f.plus.Store(1)
			d.buf, d.eof = b.Entries, b.EOF || len(b.Entries) == 0
			d.n.listBatch(d.buf, start, d.eof, mod)
			d.n.readAheadSubdirs(d.buf, start, !d.n.statsSeen.Load())
			return 0
		}
		if !notSupported(err) {
			return errno(err)
		}
		if f.plus.Load() > 0 {
			return errno(err) // the server has it; this directory failed
		}
		e := d.readPlain(ctx)
		if e == 0 {
			f.plus.Store(-1)
			f.log.Debug("server has no READDIRPLUS; using Treaddir")
		}
		return e
	}
	return d.readPlain(ctx)
}

// fromListing answers the next batch from the directory's listing read
// ahead (node.adoptListing), without a request, if it is complete and
// unchanged since.
func (d *dirHandle) fromListing(ctx context.Context) bool {
	d.n.adoptListing(ctx)
	s, ok := d.n.seqAfter(d.cookie)
	if !ok {
		return false
	}
	d.buf, d.shared, d.eof = s, true, true
	return true
}

// notSupported reports whether a READDIRPLUS request failed because the
// server does not have it.
func notSupported(err error) bool {
	return errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOSYS) ||
		errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENODATA)
}

// readPlus reads one READDIRPLUS batch: Txattrwalk + Tread + async Tclunk
// (with attributes: at most fullBytes, 0 for no bound but the message
// size; names: without attributes, as many as fit in a message).
func (d *dirHandle) readPlus(ctx context.Context, fullBytes int, names bool) (p9ext.Batch, error) {
	c := d.n.fsys.c
	dfidRef, err := d.n.holdFid(ctx)
	if err != nil {
		return p9ext.Batch{}, err
	}
	defer dfidRef.put()
	dfid := dfidRef.fid
	max := min(c.MaxIO(), p9ext.MaxBatchBytes)
	if fullBytes > 0 && !names {
		max = min(max, fullBytes)
	}
	req := p9ext.ReaddirPlusName(d.cookie, uint32(max))
	if names {
		req = p9ext.ReaddirNamesName(d.cookie, uint32(max))
	}
	xf, size, err := c.XattrWalk(ctx, dfid, req)
	if err != nil {
		return p9ext.Batch{}, err
	}
	defer c.Clunk(xf)
	if size > uint64(max) {
		d.n.fsys.log.Error("server sent an oversized readdirplus batch", "size", size, "max", max)
		return p9ext.Batch{}, syscall.EIO
	}
	b, err := c.ReadAll(ctx, xf, size, max)
	if err != nil {
		return p9ext.Batch{}, err
	}
	batch, err := p9ext.Decode(b)
	if err != nil {
		d.n.fsys.log.Error("server sent a malformed readdirplus batch", "err", err)
		return p9ext.Batch{}, syscall.EIO
	}
	return batch, nil
}

// readPlain reads entries with Treaddir (names and QIDs only).
func (d *dirHandle) readPlain(ctx context.Context) syscall.Errno {
	c := d.n.fsys.c
	if d.rfid == ninep.NoFid {
		fid, err := d.n.openFid(ctx)
		if err != nil {
			return errno(err)
		}
		if _, _, err := c.Open(ctx, fid, syscall.O_RDONLY); err != nil {
			c.Clunk(fid)
			return errno(err)
		}
		d.rfid = fid
	}
	ents, err := c.Readdir(ctx, d.rfid, d.cookie, uint32(min(c.MaxIO(), 256<<10)))
	if err != nil {
		return errno(err)
	}
	if len(ents) == 0 {
		d.eof = true
		return 0
	}
	for _, e := range ents {
		d.buf = append(d.buf, p9ext.Entry{Name: e.Name, Offset: e.Offset, Type: e.Type, QID: e.QID})
	}
	return 0
}

// Lookup answers go-fuse's per-entry lookup during READDIRPLUS from the
// batch, without a request when the batch carried attributes.
func (d *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	d.mu.Lock()
	e := d.last
	d.plus++
	shared := d.shared
	d.mu.Unlock()
	n := d.n
	if e != nil && e.Name == name && fullAttr(e.Valid) {
		return n.fromEntry(ctx, name, e, out), 0
	}
	if shared && e != nil && e.Name == name {
		// An entry read ahead without attributes: none are given
		// (the kernel takes a FUSE_READDIRPLUS entry with no node
		// ID as a plain entry, and looks the name up if it needs
		// to) rather than a lookup each (find reads no attributes).
		return nil, syscall.EAGAIN
	}
	// A known child with valid attributes needs no request either.
	if ch := n.GetChild(name); ch != nil && e != nil && e.Name == name {
		if cn, ok := ch.Operations().(*node); ok {
			cn.mu.Lock()
			a, ok := cn.attr, cn.attrValid && cn.qid.Path == e.QID.Path
			cn.mu.Unlock()
			if ok {
				cn.fillEntry(out, &a)
				return ch, 0
			}
		}
	}
	return n.Lookup(ctx, name, out)
}

// Seekdir goes back to an offset returned by Readdirent: the synthetic
// entries have offsets 1 and 2, server entries their cookie plus 2.
func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.synth, d.cookie = 2, 0
	if off < synthEntries {
		d.synth = int(off)
	} else {
		d.cookie = off - synthEntries
	}
	d.buf, d.pos, d.eof, d.last = d.buf[:0], 0, false, nil
	return 0
}

func (d *dirHandle) Releasedir(ctx context.Context, releaseFlags uint32) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.n.fsys.c.Clunk(d.rfid)
	d.rfid = ninep.NoFid
}

func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	ctx, cancel := d.n.fsys.reqCtx(ctx)
	defer cancel()
	c := d.n.fsys.c
	fid, err := d.n.openFid(ctx)
	if err != nil {
		return errno(err)
	}
	defer c.Clunk(fid)
	if _, _, err := c.Open(ctx, fid, syscall.O_RDONLY); err != nil {
		return errno(err)
	}
	return errno(c.Fsync(ctx, fid))
}
