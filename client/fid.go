package client

import (
	"sync"
	"sync/atomic"

	"github.com/qmount/qmount/client/ninep"
)

// fidRef is one server fid shared by a node and the operations using
// it. The node's hold is one reference and each operation takes one
// more for as long as its requests may carry the fid; the fid is
// clunked when the last reference goes. So a FORGET, an unlink or a
// rename racing with an operation never clunks a fid that is still in
// use, and its number (reused by the 9P client once the Rclunk
// arrives) never reaches another file while a request may still name
// it.
type fidRef struct {
	c    *ninep.Client
	fid  ninep.Fid
	refs atomic.Int32
}

func newFidRef(c *ninep.Client, fid ninep.Fid) *fidRef {
	r := &fidRef{c: c, fid: fid}
	r.refs.Store(1)
	return r
}

// put drops one reference; the last one clunks the fid. put on nil does
// nothing.
func (r *fidRef) put() {
	if r == nil {
		return
	}
	switch n := r.refs.Add(-1); {
	case n == 0:
		r.c.Clunk(r.fid)
	case n < 0:
		panic("client: fid reference dropped twice")
	}
}

// fidSlot is a node's own fid: empty until an operation needs one, then
// kept until the node is forgotten or its name removed. It is separate
// from the node so that a cleanup registered on the node can release it.
type fidSlot struct {
	mu  sync.Mutex
	ref *fidRef
}

// hold returns the slot's fid with a reference for the caller (nil if
// the slot is empty).
func (s *fidSlot) hold() *fidRef {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ref != nil {
		s.ref.refs.Add(1)
	}
	return s.ref
}

// install makes r (holding one reference, the slot's) the slot's fid if
// the slot is empty, and returns the slot's fid with a reference for
// the caller. If the slot already has a fid, r is dropped.
func (s *fidSlot) install(r *fidRef) *fidRef {
	s.mu.Lock()
	cur := s.ref
	if cur == nil {
		s.ref, cur = r, r
		r = nil
	}
	cur.refs.Add(1)
	s.mu.Unlock()
	r.put()
	return cur
}

// adopt keeps r as the slot's fid if the slot is empty, else drops it.
func (s *fidSlot) adopt(r *fidRef) {
	s.install(r).put()
}

// release empties the slot and drops its reference: the fid is clunked
// once no operation holds it any more.
func (s *fidSlot) release() {
	s.mu.Lock()
	r := s.ref
	s.ref = nil
	s.mu.Unlock()
	r.put()
}
