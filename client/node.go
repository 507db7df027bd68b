package client

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/hugelgupf/p9/p9"

	"github.com/qmount/qmount/client/ninep"
	"github.com/qmount/qmount/internal/p9ext"
)

// fsys is the state shared by all nodes of one mount.
type fsys struct {
	c   *ninep.Client
	log *slog.Logger
	cfg config

	inoMu   sync.Mutex
	inos    map[uint64]*inoState
	nextGen uint64

	// mutGen is bumped at the start and the end of every change made
	// through the mount, mutIn counts those in flight: a listing read
	// from the server is kept only if no change was in flight or began
	// while it was read (it may hold what the change replaced).
	mutGen atomic.Uint64
	mutIn  atomic.Int64

	// datas: direct-read state by inode number (direct.go).
	dataMu sync.Mutex
	datas  map[uint64]*inoData

	// plus: 0 unknown, 1 the server answers READDIRPLUS, -1 it does not;
	// names: -1 if it has no names-only batches; tree: the same for
	// READDIRTREE.
	plus, names, tree atomic.Int32
	pre               preStore // subdirectory listings read ahead
}

// inoState tracks one inode number while a node has it: the FUSE
// generation of that node, and whether its file is gone (so that a new
// file reusing the number gets a new generation, and so a new node).
// Generations come from one counter, so an identity (number,
// generation) is never given to two files.
type inoState struct {
	gen  uint64
	dead bool
}

// node is one file, directory or other object of the guest.
type node struct {
	fs.Inode
	fsys *fsys

	fids *fidSlot // the node's own fid, walked when first needed

	mu        sync.Mutex
	qid       p9.QID
	gen       uint64
	attr      p9.Attr
	attrValid bool
	attrGen   uint64 // bumped by every invalidation
	xattrs    []string
	// listing: this directory's entries, from READDIRPLUS batches and
	// kept up to date by every change of its entries made through the
	// mount. A nil entry is a name known to exist whose attributes are
	// not known. listMod counts those changes (a batch fetched while one
	// happened is not trusted).
	listing      map[string]*p9ext.Entry
	listSeq      []p9ext.Entry // the listing in order, while unchanged since read ahead
	listAt       time.Time
	listComplete bool
	listNext     uint64 // the cookie the listing's last batch ended at
	listMod      uint64
	tooBig       bool        // the listing exceeded maxListing
	misses       int         // lookups sent to the server since the last prefetch
	prefetching  atomic.Bool // a prefetch of the listing is running
	listNames    bool        // the listing was read ahead without attributes
	// statsSeen: a lookup under this directory needed attributes a
	// listing read ahead without them lacked (prefetch.go).
	statsSeen   atomic.Bool
	treeNamed   []treeChunk // read-ahead without attributes, to re-read with them
	treeNamedAt time.Time   // when the last of treeNamed was sent
	xattrsOK    bool        // xattrs is the complete list of names
	target      string
	opens       []openRef // the fids of the node's open files, lent to its other operations
	// openStamp: mtime and size seen at the last open, to keep the
	// kernel's page cache when nothing changed.
	openStamp [3]uint64
	opened    bool
}

var (
	_ fs.NodeLookuper       = (*node)(nil)
	_ fs.NodeGetattrer      = (*node)(nil)
	_ fs.NodeSetattrer      = (*node)(nil)
	_ fs.NodeOpener         = (*node)(nil)
	_ fs.NodeCreater        = (*node)(nil)
	_ fs.NodeMkdirer        = (*node)(nil)
	_ fs.NodeMknoder        = (*node)(nil)
	_ fs.NodeLinker         = (*node)(nil)
	_ fs.NodeSymlinker      = (*node)(nil)
	_ fs.NodeReadlinker     = (*node)(nil)
	_ fs.NodeUnlinker       = (*node)(nil)
	_ fs.NodeRmdirer        = (*node)(nil)
	_ fs.NodeRenamer        = (*node)(nil)
	_ fs.NodeOpendirHandler = (*node)(nil)
	_ fs.NodeStatfser       = (*node)(nil)
	_ fs.NodeGetxattrer     = (*node)(nil)
	_ fs.NodeSetxattrer     = (*node)(nil)
	_ fs.NodeListxattrer    = (*node)(nil)
	_ fs.NodeRemovexattrer  = (*node)(nil)
	_ fs.NodeOnForgetter    = (*node)(nil)
	_ fs.NodeFsyncer        = (*node)(nil)
)

// errno maps an error of the 9P client to the errno FUSE returns.
func errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return syscall.ETIMEDOUT
	}
	if errors.Is(err, context.Canceled) {
		return syscall.EINTR
	}
	return syscall.EIO
}

// reqCtx bounds one operation's requests by the configured timeout.
// FUSE interrupts do not cancel them: a signal reaching the caller (a
// timer, SIGCHLD, the Go runtime's preemption) must not make stat or
// read fail with EINTR, which a local disk never does, and each request
// is short. Waits that can last (a blocking lock) watch the FUSE
// context themselves.
func (f *fsys) reqCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if fc, ok := ctx.(*fuse.Context); ok {
		ctx = context.WithValue(ctx, callerKey{}, fc)
	}
	ctx = context.WithoutCancel(ctx)
	if f.cfg.requestTimeout > 0 {
		return context.WithTimeout(ctx, f.cfg.requestTimeout)
	}
	return context.WithCancel(ctx)
}

// stable returns the FUSE identity of a file with qid and mode: its
// inode number is the QID path; its generation is that of the live node
// with the number, or a new one when there is none or its file is gone.
func (f *fsys) stable(qid p9.QID, mode uint32) fs.StableAttr {
	f.inoMu.Lock()
	defer f.inoMu.Unlock()
	st := f.inos[qid.Path]
	if st == nil || st.dead {
		f.nextGen++
		st = &inoState{gen: f.nextGen}
		f.inos[qid.Path] = st
		f.dataRenew(qid.Path)
	}
	return fs.StableAttr{Ino: qid.Path, Gen: st.gen, Mode: mode & syscall.S_IFMT}
}

// markDead records that the file of n is gone: its inode number may be
// reused by a new file, which must not be taken for n.
func (f *fsys) markDead(n *node) {
	f.inoMu.Lock()
	defer f.inoMu.Unlock()
	ino := n.StableAttr().Ino
	switch st := f.inos[ino]; {
	case st == nil:
		f.inos[ino] = &inoState{gen: n.gen, dead: true}
	case st.gen == n.gen:
		st.dead = true
	}
}

// newNode returns a node with an empty fid slot that is released if
// the node is dropped without being forgotten (go-fuse keeps another
// node for the same file when two lookups race).
func (f *fsys) newNode(gen uint64) *node {
	n := &node{fsys: f, fids: &fidSlot{}, gen: gen}
	runtime.AddCleanup(n, (*fidSlot).release, n.fids)
	return n
}

// existingChild returns the node go-fuse has under parent/name if it is
// the file with inode number ino and type mode, still alive.
func (f *fsys) existingChild(parent *node, name string, ino uint64, mode uint32) *node {
	ch := parent.GetChild(name)
	if ch == nil {
		return nil
	}
	n, ok := ch.Operations().(*node)
	if !ok || ch.StableAttr().Ino != ino || ch.StableAttr().Mode != mode&syscall.S_IFMT {
		return nil
	}
	f.inoMu.Lock()
	defer f.inoMu.Unlock()
	switch st := f.inos[ino]; {
	case st == nil:
		// Forgotten by go-fuse while a lookup brought it back: track
		// it again.
		f.inos[ino] = &inoState{gen: n.gen}
	case st.gen != n.gen || st.dead:
		return nil
	}
	return n
}

// newChild returns the node for a file learnt from the server (lookup,
// create, READDIRPLUS) under parent/name. fid, if not NoFid, is a walked
// fid for it that the node keeps (directories) or that is clunked.
func (f *fsys) newChild(ctx context.Context, parent *node, name string, qid p9.QID, valid p9.AttrMask, attr p9.Attr, fid ninep.Fid) *node {
	if !valid.Mode {
		attr.Mode = qidMode(qid.Type)
	}
	mode := uint32(attr.Mode)
	n := f.existingChild(parent, name, qid.Path, mode)
	fresh := n == nil
	var sa fs.StableAttr
	if fresh {
		sa = f.stable(qid, mode)
		n = f.newNode(sa.Gen)
	}
	n.setAttr(qid, valid, attr)
	if fid != ninep.NoFid {
		if mode&syscall.S_IFMT == syscall.S_IFDIR {
			n.fids.adopt(newFidRef(f.c, fid))
		} else {
			f.c.Clunk(fid)
		}
	}
	if fresh {
		parent.NewInode(ctx, n, sa)
	}
	return n
}

func qidMode(t p9.QIDType) p9.FileMode {
	switch {
	case t&p9.TypeDir != 0:
		return p9.ModeDirectory
	case t&p9.TypeSymlink != 0:
		return p9.ModeSymlink
	default:
		return p9.ModeRegular
	}
}

// OnForget releases the node's fid: the kernel no longer knows it. (A
// lookup racing with the FORGET can bring the node back; it then walks
// a new fid when it needs one.)
func (n *node) OnForget() {
	f := n.fsys
	f.inoMu.Lock()
	if st := f.inos[n.StableAttr().Ino]; st != nil && st.gen == n.gen {
		delete(f.inos, n.StableAttr().Ino)
	}
	f.inoMu.Unlock()
	f.dataForget(n.StableAttr().Ino)
	if !n.IsRoot() {
		n.fids.release()
	}
}

// fullAttr reports whether attributes with mask valid can answer a
// stat (a READDIRPLUS entry may carry less, or only the file type).
func fullAttr(valid p9.AttrMask) bool {
	return valid.Mode && valid.Size && valid.MTime && valid.NLink
}

// fromEntry returns the child name of n described by e (which has full
// attributes), filling out for the kernel.
func (n *node) fromEntry(ctx context.Context, name string, e *p9ext.Entry, out *fuse.EntryOut) *fs.Inode {
	child := n.fsys.newChild(ctx, n, name, e.QID, e.Valid, e.Attr, ninep.NoFid)
	if e.XattrsKnown {
		child.setXattrNames(slices.Clone(e.Xattrs))
	}
	child.fillEntry(out, &e.Attr)
	return child.EmbeddedInode()
}

// setAttr stores attributes learnt from the server.
func (n *node) setAttr(qid p9.QID, valid p9.AttrMask, attr p9.Attr) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.qid = qid
	if fullAttr(valid) {
		n.attr = attr
		n.attrValid = true
	}
}

// invalidate forgets the cached attributes (after a change), and what
// the parent's listing says of them (the name stays listed).
func (n *node) invalidate() {
	n.mu.Lock()
	n.attrValid = false
	n.attrGen++
	n.mu.Unlock()
	if name, p := n.Parent(); p != nil {
		if pn, ok := p.Operations().(*node); ok {
			pn.mu.Lock()
			if _, ok := pn.listing[name]; ok {
				pn.listing[name] = nil
			}
			pn.listChanged() // a batch in flight may hold the old attributes
			pn.mu.Unlock()
		}
	}
}

// listChanged records a change of the directory's entries (or of what
// its listing says of them): batches and listings read ahead meanwhile
// are not trusted, nor the ordered listing for readdir. Caller holds
// n.mu.
func (n *node) listChanged() {
	n.listMod++
	n.listSeq, n.listNames = nil, false
	n.fsys.pre.drop(n.qid.Path)
}

// listingTTL bounds how long a listing read from the server answers
// lookups, though the operations made through the mount keep it up to
// date: a change through another name of a file with several links
// updates only that name's directory, and `qmount loopback` serves a
// directory that others may change. Once it has expired, a few lookups
// answered by the server read it again (prefetch).
const listingTTL = 10 * time.Second

// maxListing bounds the entries a directory's listing keeps.
const maxListing = 1 << 16

// mutation marks a change made through the mount until the returned
// function is called (see fsys.mutGen).
func (f *fsys) mutation() (done func()) {
	f.mutIn.Add(1)
	f.mutGen.Add(1)
	return func() {
		f.mutGen.Add(1)
		f.mutIn.Add(-1)
	}
}

// quiet is a snapshot of the mount's changes, taken before reading a
// listing from the server.
type quiet struct {
	gen uint64
	ok  bool // no change was in flight
}

func (f *fsys) quietNow() quiet {
	in := f.mutIn.Load() // before gen: a change starting between them moves gen
	return quiet{gen: f.mutGen.Load(), ok: in == 0}
}

// still reports whether no change was in flight at q and none began or
// ended since: a listing read meanwhile is current.
func (f *fsys) still(q quiet) bool { return q.ok && f.mutGen.Load() == q.gen }

// epoch is what listBatch checks a batch against: the directory's own
// changes (listMod) and the mount's (quiet).
type epoch struct {
	mod uint64
	q   quiet
}

// listEpoch returns the directory's and the mount's change counts, to be
// passed to listBatch with a batch fetched after it was read.
func (n *node) listEpoch() epoch {
	q := n.fsys.quietNow()
	n.mu.Lock()
	defer n.mu.Unlock()
	return epoch{n.listMod, q}
}

// listBatch records a READDIRPLUS batch of this directory (start: the
// cookie it starts after, 0 for the first; eof: the listing is complete
// after it; mod: the listEpoch before the batch was asked for), so that
// lookups after a readdir (ls -l, find -ls) need no request. A batch
// that does not continue the listing where it ended (two readers of the
// directory, a seek) drops it: a complete listing with a gap would
// answer ENOENT for files that exist. The kernel's
// READDIRPLUS_AUTO mode asks for attributes only in the first readdir
// request of a directory: the lookups that follow are answered here. It
// reports whether the listing is still being built.
func (n *node) listBatch(entries []p9ext.Entry, start uint64, eof bool, ep epoch) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.listSeq, n.listNames = nil, false // read again: rebuilt below, or dropped
	if n.listMod != ep.mod || !n.fsys.still(ep.q) {
		// The entries changed while the batch was in flight: it may
		// predate the change.
		n.listing = nil
		return false
	}
	if start == 0 {
		n.listing = make(map[string]*p9ext.Entry, len(entries))
		n.listAt, n.listComplete, n.misses = time.Now(), false, 0
	} else if n.listing != nil && (n.listComplete || start != n.listNext) {
		n.listing = nil
	}
	if n.listing == nil {
		return false
	}
	if len(entries) > 0 {
		n.listNext = entries[len(entries)-1].Offset
	}
	for i := range entries {
		e := &entries[i]
		if len(n.listing) >= maxListing {
			n.listing, n.tooBig = nil, true // too big to keep whole
			return false
		}
		if !fullAttr(e.Valid) {
			n.listing[e.Name] = nil
			continue
		}
		c := *e
		c.Xattrs = slices.Clone(e.Xattrs)
		n.listing[e.Name] = &c
	}
	n.listComplete = eof
	return true
}

// listed answers a lookup of name from the directory's listing: the
// entry if listed with attributes, or absent (true) if the complete
// listing lacks it.
func (n *node) listed(name string) (e *p9ext.Entry, absent bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.listing == nil || time.Since(n.listAt) > listingTTL {
		return nil, false
	}
	e, ok := n.listing[name]
	if !ok {
		return nil, n.listComplete
	}
	return e, false
}

// listSet records that name now is in the directory (e: its attributes,
// or nil if unknown) or, with gone, that it is not.
func (n *node) listSet(name string, e *p9ext.Entry, gone bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.listChanged()
	if n.listing == nil {
		return
	}
	if gone {
		delete(n.listing, name)
		return
	}
	if _, ok := n.listing[name]; !ok && len(n.listing) >= maxListing {
		n.listing, n.tooBig = nil, true
		return
	}
	if e != nil {
		c := *e
		c.Name = name
		c.Xattrs = slices.Clone(e.Xattrs)
		e = &c
	}
	n.listing[name] = e
}

// listDrop forgets the listing: a change of the entries failed, so
// what it did is not known.
func (n *node) listDrop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.listChanged()
	n.listing = nil
}

// listNew starts the listing of a directory just made through the
// mount: complete and empty.
func (n *node) listNew() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.listChanged() // its inode number may have held another directory
	n.listing = map[string]*p9ext.Entry{}
	n.listAt, n.listComplete, n.tooBig, n.misses = time.Now(), true, false, 0
}

// entry returns the node's cached attributes as a listing entry (nil if
// they are not valid).
func (n *node) entry() *p9ext.Entry {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.attrValid {
		return nil
	}
	return &p9ext.Entry{QID: n.qid, Valid: p9.AttrMask{Mode: true, NLink: true, UID: true, GID: true,
		RDev: true, ATime: true, MTime: true, CTime: true, INo: true, Size: true, Blocks: true},
		Attr: n.attr, Xattrs: n.xattrs, XattrsKnown: n.xattrsOK}
}

// prefetchAfter is the number of lookups a directory answers one by one
// from the server (no listing, or names without attributes) before it
// reads its whole listing with attributes instead (stat of many names in
// a directory that was not listed, ls -l after a listing of names: one
// request per batch of entries, not one per name).
const prefetchAfter = 4

// prefetchMaxSize bounds the size (as the file system reports it) of
// directories whose listing is prefetched.
const prefetchMaxSize = 2 << 20

// missed counts a lookup sent to the server, and reports whether the
// listing should now be read.
func (n *node) missed() bool {
	if n.fsys.plus.Load() < 0 {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.tooBig || (n.attrValid && n.attr.Size > prefetchMaxSize) {
		return false
	}
	if n.listNames && time.Since(n.listAt) <= listingTTL {
		// Read ahead for a readdir, and now stat: read the listing
		// with attributes at once, and ask for them in the
		// read-ahead of this directory and of its parent.
		n.listNames, n.misses = false, 0
		go n.sawStatsUnder() // takes n.mu
		return true
	}
	n.misses++
	if n.misses < prefetchAfter {
		return false
	}
	n.misses = 0
	return true
}

// prefetch reads the directory's whole listing in READDIRPLUS batches
// (one at a time per directory).
func (n *node) prefetch(ctx context.Context) {
	if !n.prefetching.CompareAndSwap(false, true) {
		return
	}
	defer n.prefetching.Store(false)
	d := &dirHandle{n: n, rfid: ninep.NoFid}
	for {
		mod := n.listEpoch()
		start := d.cookie
		b, err := d.readPlus(ctx, 0, false)
		if err != nil {
			if notSupported(err) && n.fsys.plus.Load() == 0 {
				n.fsys.plus.Store(-1)
			}
			n.listDrop()
			return
		}
		n.fsys.plus.Store(1)
		eof := b.EOF || len(b.Entries) == 0
		ok := n.listBatch(b.Entries, start, eof, mod)
		n.readAheadSubdirs(b.Entries, start, false) // for lookups: with attributes
		if !ok || eof {
			return
		}
		d.cookie = b.Entries[len(b.Entries)-1].Offset
	}
}

// holdFid returns the node's fid, walking from its parent if it has
// none, with a reference the caller drops with put when its requests
// are done. Other files than directories get a fid of their own each
// time, clunked after use.
func (n *node) holdFid(ctx context.Context) (*fidRef, error) {
	return n.holdFidFor(ctx, false)
}

// holdFidFor is holdFid; a file open for writing lends its fid when
// writable, any open file's otherwise.
func (n *node) holdFidFor(ctx context.Context, writable bool) (*fidRef, error) {
	if r := n.lentFid(writable); r != nil {
		return r, nil
	}
	n.mu.Lock()
	qid := n.qid
	n.mu.Unlock()
	nf, err := n.walkFromParent(ctx, qid)
	if err != nil {
		return nil, err
	}
	r := newFidRef(n.fsys.c, nf)
	if !n.IsDir() {
		// Only directories keep their fid (lookups walk from it): the
		// server holds a descriptor per fid, and the kernel may cache
		// the inodes of millions of files.
		return r, nil
	}
	return n.fids.install(r), nil
}

// lentFid returns, without a request, the node's own fid or one of its
// open files' (writable if asked), held for the caller; nil if none.
func (n *node) lentFid(writable bool) *fidRef {
	if r := n.fids.hold(); r != nil {
		return r
	}
	return n.holdOpen(writable)
}

// parentFid returns the node's name and its parent's fid, held for the
// caller.
func (n *node) parentFid(ctx context.Context) (string, *fidRef, error) {
	name, parent := n.Parent()
	if parent == nil {
		return "", nil, syscall.ESTALE
	}
	pn, ok := parent.Operations().(*node)
	if !ok {
		return "", nil, syscall.EIO
	}
	pr, err := pn.holdFid(ctx)
	return name, pr, err
}

// walkFromParent walks a new fid to the node by its name in its parent,
// checking that the name still leads to the same file.
func (n *node) walkFromParent(ctx context.Context, qid p9.QID) (ninep.Fid, error) {
	name, pr, err := n.parentFid(ctx)
	if err != nil {
		return ninep.NoFid, err
	}
	defer pr.put()
	nf, qids, err := n.fsys.c.Walk(ctx, pr.fid, []string{name})
	if err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return ninep.NoFid, syscall.ESTALE
		}
		return ninep.NoFid, err
	}
	if qids[0].Path != qid.Path {
		n.fsys.c.Clunk(nf)
		return ninep.NoFid, syscall.ESTALE
	}
	return nf, nil
}

// walkGetattrFromParent reads the node's attributes with a Twalkgetattr
// of its name from its parent, checking that the name still leads to the
// same file.
func (n *node) walkGetattrFromParent(ctx context.Context, qid p9.QID) (p9.QID, p9.AttrMask, p9.Attr, error) {
	name, pr, err := n.parentFid(ctx)
	if err != nil {
		return p9.QID{}, p9.AttrMask{}, p9.Attr{}, err
	}
	defer pr.put()
	nf, qids, valid, attr, err := n.fsys.c.WalkGetattr(ctx, pr.fid, []string{name})
	if err != nil {
		if errors.Is(err, syscall.ENOENT) {
			err = syscall.ESTALE
		}
		return p9.QID{}, p9.AttrMask{}, p9.Attr{}, err
	}
	n.fsys.c.Clunk(nf)
	if qids[0].Path != qid.Path {
		return p9.QID{}, p9.AttrMask{}, p9.Attr{}, syscall.ESTALE
	}
	return qids[0], valid, attr, nil
}

// openFid returns a new fid for the node, for opening; the caller owns
// it.
func (n *node) openFid(ctx context.Context) (ninep.Fid, error) {
	if r := n.fids.hold(); r != nil {
		defer r.put()
		nf, _, err := n.fsys.c.Walk(ctx, r.fid, nil)
		return nf, err
	}
	n.mu.Lock()
	qid := n.qid
	n.mu.Unlock()
	return n.walkFromParent(ctx, qid)
}

// refresh fetches the attributes with Tgetattr on fid (the node's if
// NoFid) and stores them unless they were invalidated meanwhile.
// A file without a fid of its own (not a directory) is asked with one
// Twalkgetattr from its parent instead of a walk and a Tgetattr.
func (n *node) refresh(ctx context.Context, fid ninep.Fid) (p9.Attr, error) {
	n.mu.Lock()
	gen, qid0 := n.attrGen, n.qid
	n.mu.Unlock()
	var (
		qid   p9.QID
		valid p9.AttrMask
		attr  p9.Attr
		err   error
	)
	if fid == ninep.NoFid {
		r := n.lentFid(false)
		if r == nil && !n.IsDir() && !n.IsRoot() {
			qid, valid, attr, err = n.walkGetattrFromParent(ctx, qid0)
		} else if r == nil {
			if r, err = n.holdFid(ctx); err != nil {
				return p9.Attr{}, err
			}
		}
		if r != nil {
			defer r.put()
			fid = r.fid
		}
	}
	if fid != ninep.NoFid {
		qid, valid, attr, err = n.fsys.c.Getattr(ctx, fid, p9.AttrMaskAll)
	}
	if err != nil {
		return p9.Attr{}, err
	}
	if !valid.Mode {
		return attr, syscall.EIO
	}
	n.mu.Lock()
	if n.attrGen == gen {
		n.qid = qid
		n.attr = attr
		n.attrValid = valid.Size && valid.MTime && valid.NLink
	}
	n.mu.Unlock()
	return attr, nil
}

// refreshBehind fetches the node's attributes in the background (after
// a change made through it, e.g. a directory's mtime after a create, so
// the kernel's next GETATTR is answered from the cache) and returns a
// function waiting for it. The request travels alongside the caller's
// next one instead of after it.
func (n *node) refreshBehind(ctx context.Context) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.refresh(ctx, ninep.NoFid)
	}()
	return func() { <-done }
}

// cachedAttr returns the cached attributes, fetching them if invalid.
func (n *node) cachedAttr(ctx context.Context, fid ninep.Fid) (p9.Attr, error) {
	n.mu.Lock()
	if n.attrValid {
		a := n.attr
		n.mu.Unlock()
		return a, nil
	}
	n.mu.Unlock()
	return n.refresh(ctx, fid)
}

func (f *fsys) fillAttr(out *fuse.Attr, ino uint64, a *p9.Attr) {
	out.Ino = ino
	out.Size = a.Size
	out.Blocks = a.Blocks
	out.Atime, out.Atimensec = a.ATimeSeconds, uint32(a.ATimeNanoSeconds)
	out.Mtime, out.Mtimensec = a.MTimeSeconds, uint32(a.MTimeNanoSeconds)
	out.Ctime, out.Ctimensec = a.CTimeSeconds, uint32(a.CTimeNanoSeconds)
	out.Mode = uint32(a.Mode)
	out.Nlink = uint32(a.NLink)
	out.Uid, out.Gid = uint32(a.UID), uint32(a.GID)
	if f.cfg.idMap != nil {
		out.Uid, out.Gid = f.cfg.idMap.ToHost(out.Uid, out.Gid)
	}
	out.Rdev = encodeDev(uint64(a.RDev))
	if a.BlockSize > 0 && a.BlockSize <= 1<<30 {
		out.Blksize = uint32(a.BlockSize)
	} else {
		out.Blksize = 4096
	}
}

// encodeDev turns a Linux dev_t into the kernel's 32-bit "new" encoding
// that FUSE carries.
func encodeDev(d uint64) uint32 {
	major := uint32((d>>8)&0xfff) | uint32((d>>32)&^0xfff)
	minor := uint32(d&0xff) | uint32((d>>12)&^0xff)
	return (minor & 0xff) | (major&0xfff)<<8 | (minor&^0xff)<<12
}

// decodeDev splits the FUSE 32-bit device number into major and minor.
func decodeDev(d uint32) (uint32, uint32) {
	return (d & 0xfff00) >> 8, (d & 0xff) | ((d >> 12) & 0xfff00)
}

func (n *node) fillEntry(out *fuse.EntryOut, a *p9.Attr) {
	n.fsys.fillAttr(&out.Attr, n.StableAttr().Ino, a)
	out.SetEntryTimeout(n.fsys.cfg.entryTimeout)
	out.SetAttrTimeout(n.fsys.cfg.attrTimeout)
}

// caller returns the guest owner of objects created by the FUSE caller.
func (f *fsys) caller(ctx context.Context) (p9.UID, p9.GID) {
	c, ok := ctx.(*fuse.Context)
	if !ok {
		if fc, ok2 := ctx.Value(callerKey{}).(*fuse.Context); ok2 {
			c, ok = fc, true
		}
	}
	if ok {
		uid, gid := c.Caller.Uid, c.Caller.Gid
		if f.cfg.idMap != nil {
			uid, gid = f.cfg.idMap.ToGuest(uid, gid)
		}
		return p9.UID(uid), p9.GID(gid)
	}
	return p9.NoUID, p9.NoGID
}

type callerKey struct{}

// xattrKnownAbsent reports whether attr is certainly not set on n.
func (n *node) xattrKnownAbsent(attr string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.xattrsOK && !slices.Contains(n.xattrs, attr)
}

func (n *node) setXattrNames(names []string) {
	n.mu.Lock()
	n.xattrs = names
	n.xattrsOK = true
	n.mu.Unlock()
}
