package client

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hugelgupf/p9/p9"

	"github.com/qmount/qmount/internal/p9ext"
)

// Subdirectory listings are read ahead with READDIRTREE (p9ext): when a
// directory's entries are read (a READDIRPLUS batch, or the listing a
// lookup prefetches) and some are subdirectories, their listings are
// fetched in the background, treeChunkDirs per request,
// and kept by inode number until the subdirectory's node asks for its
// listing (a lookup, or a readdir answered without a request). A tree of
// many small directories (find, stat of every file) then costs a few
// requests per treeChunkDirs directories instead of a walk and a
// READDIRPLUS each.
//
// Listings read ahead for a readdir (find) carry names and types only,
// so the server reads no inode (under TCG, its statx and listxattr of
// every entry cost more than the round trips saved). The first lookup a
// directory read ahead so cannot answer reads its listing with
// attributes at once, and marks it and its parent (statsSeen): their
// read-ahead asks for attributes from then on, and what they read ahead
// without them that no node took yet is read again with them (du,
// find -ls: a request per treeChunkDirs directories, not a prefetch
// each).
// Listings read ahead for lookups (the listing a directory prefetches
// after a few, stat by path) carry attributes.
const (
	treeChunkDirs  = 16        // subdirectories per READDIRTREE request
	treeChunkBytes = 512 << 10 // bound of one request's answer
	treeMaxDirs    = 128       // subdirectories read ahead per directory read
	treeInFlight   = 4         // READDIRTREE requests in flight per mount
	// treeMaxDirSize skips subdirectories whose size (as the file system
	// reports it) says they are large: their listing would not fit.
	treeMaxDirSize = 256 << 10
	// maxPrefetched bounds the entries held in listings read ahead and not
	// yet taken by a node.
	maxPrefetched = 1 << 16
	// maxTreeFlights bounds the subdirectories being read ahead.
	maxTreeFlights = 1024
)

// preListing is a subdirectory's listing read ahead, in the server's
// order.
type preListing struct {
	entries  []p9ext.Entry
	complete bool
	names    bool      // entries carry no attributes
	at       time.Time // when it was asked for
}

// cost is what a listing counts against maxPrefetched: its entries, and
// one for itself (listings of empty directories are bounded too).
func (l *preListing) cost() int { return len(l.entries) + 1 }

// preStore holds the listings read ahead, by the directory's QID path,
// and those being read. A change of a directory's entries made through
// the mount drops its listing (drop), also from a request in flight.
type preStore struct {
	mu      sync.Mutex
	lists   map[uint64]*preListing
	held    int                      // cost of lists (preListing.cost)
	flights map[uint64]chan struct{} // the latest flight of each directory
	// inFlight counts each directory's flights (two may overlap: a
	// re-read with attributes, two readers of the parent); ver counts
	// its changes while any is in flight.
	inFlight map[uint64]int
	ver      map[uint64]uint64
	sem      chan struct{}
}

// flight is one read-ahead request's directories in flight: done is
// closed when it ends; vers are their change counts when it began.
type flight struct {
	done chan struct{}
	vers []uint64
}

func (s *preStore) init() {
	s.lists = map[uint64]*preListing{}
	s.flights = map[uint64]chan struct{}{}
	s.inFlight = map[uint64]int{}
	s.ver = map[uint64]uint64{}
	s.sem = make(chan struct{}, treeInFlight)
}

// drop forgets what is read ahead of directory ino: its entries changed.
func (s *preStore) drop(ino uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.lists[ino]; l != nil {
		s.held -= l.cost()
		delete(s.lists, ino)
	}
	if s.inFlight[ino] > 0 {
		s.ver[ino]++
	}
}

// dropNames forgets the listings of inos read ahead without attributes
// (stored or in flight), and reports whether any was not taken yet.
func (s *preStore) dropNames(inos []uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	any := false
	for _, ino := range inos {
		if l := s.lists[ino]; l != nil && l.names {
			s.held -= l.cost()
			delete(s.lists, ino)
			any = true
		}
		if s.flights[ino] != nil {
			any = true
		}
	}
	return any
}

// known reports whether directory ino is read ahead or being read.
func (s *preStore) known(ino uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lists[ino] != nil || s.flights[ino] != nil
}

// begin marks the directories inos as being read and returns their
// flight; nil if too many are in flight.
func (s *preStore) begin(inos []uint64) *flight {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.flights)+len(inos) > maxTreeFlights {
		return nil
	}
	fl := &flight{done: make(chan struct{}), vers: make([]uint64, len(inos))}
	for i, ino := range inos {
		s.flights[ino] = fl.done
		s.inFlight[ino]++
		fl.vers[i] = s.ver[ino]
	}
	return fl
}

// end stores the listings read (by QID path) unless their directory
// changed meanwhile or the store is full, and ends the flights of inos.
func (s *preStore) end(inos []uint64, got map[uint64]*preListing, fl *flight) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, ino := range inos {
		l := got[ino]
		old := s.lists[ino]
		if old != nil && l != nil && l.names && !old.names {
			l = nil // a read without attributes ended after one with
		}
		if l != nil && s.ver[ino] == fl.vers[i] && s.room(l.cost()) {
			if old != nil {
				s.held -= old.cost()
			}
			s.lists[ino] = l
			s.held += l.cost()
		}
		if s.inFlight[ino]--; s.inFlight[ino] <= 0 {
			delete(s.inFlight, ino)
			delete(s.ver, ino)
			delete(s.flights, ino)
		}
	}
	close(fl.done)
}

// room reports whether n more entries may be held, sweeping expired
// listings when the store is full. Caller holds s.mu.
func (s *preStore) room(n int) bool {
	if s.held+n <= maxPrefetched {
		return true
	}
	for ino, l := range s.lists {
		if time.Since(l.at) > listingTTL {
			s.held -= l.cost()
			delete(s.lists, ino)
		}
	}
	return s.held+n <= maxPrefetched
}

// take removes and returns the listing read ahead of directory ino,
// waiting for it if it is being read (until ctx ends); nil if none, or
// expired.
func (s *preStore) take(ctx context.Context, ino uint64) *preListing {
	s.mu.Lock()
	done := s.flights[ino]
	s.mu.Unlock()
	if done != nil {
		select {
		case <-done:
		case <-ctx.Done():
			return nil
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.lists[ino]
	if l == nil {
		return nil
	}
	s.held -= l.cost()
	delete(s.lists, ino)
	if time.Since(l.at) > listingTTL {
		return nil
	}
	return l
}

// treeChunk is one READDIRTREE request: the subdirectories (name -> QID
// path) that follow cookie after in the directory, in order; names:
// without attributes.
type treeChunk struct {
	after  uint64
	byName map[string]uint64
	inos   []uint64
	names  bool
}

// readAheadSubdirs starts reading the listings of the subdirectories
// among entries (a batch of n's listing starting after cookie start) in
// the background, unless the server lacks READDIRTREE. With names, the
// listings carry no attributes (see node.statsSeen).
func (n *node) readAheadSubdirs(entries []p9ext.Entry, start uint64, names bool) {
	f := n.fsys
	if f.tree.Load() < 0 || f.plus.Load() <= 0 {
		return
	}
	for _, ch := range n.treeChunks(entries, start, names) {
		done := f.pre.begin(ch.inos)
		if done == nil {
			return
		}
		if ch.names {
			n.rememberNamed(ch)
		}
		go n.readTree(ch, done)
	}
}

// maxTreeNamed bounds the read-ahead requests a directory remembers for
// re-reading with attributes.
const maxTreeNamed = 2 * treeMaxDirs / treeChunkDirs

// rememberNamed keeps ch, read ahead without attributes, for sawStats
// (those older than listingTTL are forgotten: their listings expired).
func (n *node) rememberNamed(ch treeChunk) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if time.Since(n.treeNamedAt) > listingTTL {
		n.treeNamed = nil
	}
	n.treeNamedAt = time.Now()
	if len(n.treeNamed) < maxTreeNamed {
		n.treeNamed = append(n.treeNamed, ch)
	}
}

// sawStatsUnder records that a lookup in n needed attributes its
// listing read ahead lacked: see sawStats, for n and its parent.
func (n *node) sawStatsUnder() {
	n.sawStats()
	if _, p := n.Parent(); p != nil {
		if pn, ok := p.Operations().(*node); ok {
			pn.sawStats()
		}
	}
}

// sawStats records that a lookup under n needed attributes its listing
// read ahead lacked: n's read-ahead asks for them from now on, and its
// listings read ahead without them that no node took yet are read again
// with them (find -ls, du: a request per treeChunkDirs directories
// rather than a prefetch each).
func (n *node) sawStats() {
	if n.statsSeen.Swap(true) {
		return
	}
	n.mu.Lock()
	chunks := n.treeNamed
	if time.Since(n.treeNamedAt) > listingTTL {
		chunks = nil
	}
	n.treeNamed = nil
	n.mu.Unlock()
	f := n.fsys
	for _, ch := range chunks {
		if !f.pre.dropNames(ch.inos) {
			continue // all taken already
		}
		ch.names = false
		done := f.pre.begin(ch.inos)
		if done == nil {
			return
		}
		go n.readTree(ch, done)
	}
}

// treeChunks groups the subdirectories among entries that need reading
// ahead into requests of consecutive ones (the server lists the next N
// subdirectories after a cookie), at most treeMaxDirs in all.
func (n *node) treeChunks(entries []p9ext.Entry, start uint64, names bool) []treeChunk {
	var (
		chunks []treeChunk
		cur    *treeChunk
		total  int
	)
	prev := start
	for i := range entries {
		e := &entries[i]
		after := prev
		prev = e.Offset
		if e.QID.Type&p9.TypeDir == 0 {
			continue
		}
		if !n.readAheadWanted(e) || total >= treeMaxDirs {
			cur = nil // the next request starts after this one
			continue
		}
		if cur == nil || len(cur.inos) >= treeChunkDirs {
			chunks = append(chunks, treeChunk{after: after, byName: map[string]uint64{}, names: names})
			cur = &chunks[len(chunks)-1]
		}
		cur.byName[e.Name] = e.QID.Path
		cur.inos = append(cur.inos, e.QID.Path)
		total++
	}
	return chunks
}

// readAheadWanted reports whether the subdirectory e of n should be read
// ahead: not large, not read ahead already, and its node (if the kernel
// has one) has no fresh listing.
func (n *node) readAheadWanted(e *p9ext.Entry) bool {
	if e.Valid.Size && e.Attr.Size > treeMaxDirSize {
		return false
	}
	if n.fsys.pre.known(e.QID.Path) {
		return false
	}
	ch := n.GetChild(e.Name)
	if ch == nil {
		return true
	}
	cn, ok := ch.Operations().(*node)
	if !ok {
		return false
	}
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.listing == nil || time.Since(cn.listAt) > listingTTL
}

// readTree reads one chunk of subdirectory listings (more requests if
// the server stopped early for lack of room) and stores them.
func (n *node) readTree(ch treeChunk, done *flight) {
	f := n.fsys
	got := map[uint64]*preListing{}
	q := f.quietNow()
	defer func() {
		if !f.still(q) {
			// A change through the mount was in flight or began
			// meanwhile: what was read may predate it.
			clear(got)
		}
		f.pre.end(ch.inos, got, done)
	}()
	f.pre.sem <- struct{}{}
	defer func() { <-f.pre.sem }()
	ctx, cancel := f.reqCtx(context.Background())
	defer cancel()
	// Decided when sent: stats seen meanwhile (statsSeen) ask for
	// attributes.
	names := ch.names && !n.statsSeen.Load()
	after, left := ch.after, len(ch.inos)
	for left > 0 {
		at := time.Now()
		t, err := n.readTreeOnce(ctx, after, left, names)
		if err != nil {
			if notSupported(err) && f.tree.Load() == 0 {
				f.tree.Store(-1)
				f.log.Debug("server has no READDIRTREE")
			}
			return
		}
		f.tree.Store(1)
		for _, s := range t.Subs {
			ino, ok := ch.byName[s.Name]
			if !ok || ino != s.QID.Path || got[ino] != nil {
				// Not a subdirectory the listing had (changed
				// meanwhile, or a confused server): not trusted.
				return
			}
			got[ino] = &preListing{entries: s.Batch.Entries, complete: s.Batch.EOF, names: names, at: at}
		}
		if t.Done || len(t.Subs) == 0 {
			return
		}
		after, left = t.Subs[len(t.Subs)-1].Offset, left-len(t.Subs)
	}
}

// readTreeOnce sends one READDIRTREE request for the next dirs
// subdirectories after cookie after (names: without attributes).
func (n *node) readTreeOnce(ctx context.Context, after uint64, dirs int, names bool) (p9ext.Tree, error) {
	c := n.fsys.c
	r, err := n.holdFid(ctx)
	if err != nil {
		return p9ext.Tree{}, err
	}
	defer r.put()
	max := min(c.MaxIO(), treeChunkBytes)
	name := p9ext.ReaddirTreeName(after, uint32(max), dirs)
	if names {
		name = p9ext.ReaddirTreeNamesName(after, uint32(max), dirs)
	}
	b, err := c.GetXattr(ctx, r.fid, name, max)
	if err != nil {
		return p9ext.Tree{}, err
	}
	t, err := p9ext.DecodeTree(b)
	if err != nil {
		if n.fsys.tree.Swap(-1) >= 0 {
			n.fsys.log.Error("server sent a malformed readdirtree answer; not asking again", "err", err)
		}
		return p9ext.Tree{}, fmt.Errorf("readdirtree: %w", err)
	}
	return t, nil
}

// adoptListing gives n the listing read ahead of it, if it has no fresh
// one (waiting for it if it is being read), so that lookups and readdir
// are answered without a request; its own subdirectories are then read
// ahead in turn.
func (n *node) adoptListing(ctx context.Context) {
	n.mu.Lock()
	fresh := n.listing != nil && time.Since(n.listAt) <= listingTTL
	ino, mod := n.qid.Path, n.listMod
	n.mu.Unlock()
	if fresh || !n.IsDir() {
		return
	}
	l := n.fsys.pre.take(ctx, ino)
	if l == nil || !n.setListing(l, mod) {
		return
	}
	// Its subdirectories without attributes unless stats were seen in
	// it: a listing read ahead with attributes (a sibling's stats, a
	// prefetch) must not make a whole tree below be read with them
	// (under TCG the server's stat of every entry costs more than the
	// round trips saved).
	n.readAheadSubdirs(l.entries, 0, !n.statsSeen.Load())
}

// setListing installs l as n's listing unless n's entries changed since
// the epoch mod, or it is too big.
func (n *node) setListing(l *preListing, mod uint64) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.listMod != mod || len(l.entries) > maxListing {
		return false
	}
	m := make(map[string]*p9ext.Entry, len(l.entries))
	for i := range l.entries {
		e := &l.entries[i]
		if fullAttr(e.Valid) {
			m[e.Name] = e
		} else {
			m[e.Name] = nil
		}
	}
	n.listing, n.listSeq, n.listNames = m, l.entries, l.names
	n.listAt, n.listComplete, n.misses = l.at, l.complete, 0
	if len(l.entries) > 0 {
		n.listNext = l.entries[len(l.entries)-1].Offset
	}
	return true
}

// seqAfter returns the entries of n's listing after cookie (0: all),
// when the listing is complete, fresh and unchanged since it was read
// ahead, so that readdir needs no request. The slice is shared: callers
// must not write to it (its capacity ends with it).
func (n *node) seqAfter(cookie uint64) ([]p9ext.Entry, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.listSeq == nil || !n.listComplete || time.Since(n.listAt) > listingTTL {
		return nil, false
	}
	s := n.listSeq
	if cookie != 0 {
		i := 0
		for i < len(s) && s[i].Offset != cookie {
			i++
		}
		if i == len(s) {
			return nil, false
		}
		s = s[i+1:]
	}
	return s[:len(s):len(s)], true
}
