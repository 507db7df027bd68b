package client

import (
	"context"
	"io"
	"sort"
	"sync/atomic"

	"github.com/qmount/qmount/client/ninep"
	"github.com/qmount/qmount/internal/p9ext"
)

// Direct reads: with WithDirectRead the client reads a file's data from
// the device the guest's file system lives on (the disk image or block
// device on the host) instead of through the VM, at the places the
// server's extent map (p9ext EXTENTS) gives. Only the map crosses the
// VM: one round trip per file instead of the data, and no guest CPU.
//
// A map is used only while it is exact: it is fetched with the file's
// dirty pages written back first (FIEMAP_FLAG_SYNC on the server), it is
// dropped by every change of the file made through the mount (the node's
// attrGen, bumped by each invalidation), and it is not used at all while
// the file is open for writing through the mount (writes and shared
// mmap go through the guest, whose page cache is then ahead of the
// disk). The guest's file system changes only through this mount. Reads
// outside the map, files the server will not map (other file systems,
// inline, encrypted or compressed data), and any extent outside the
// device go through 9P as before.

// maxMapExtents bounds the extents asked for per map request.
const maxMapExtents = 4096

// directMinSize: smaller files are read through 9P (the map costs the
// same round trip as reading them).
const directMinSize = 64 << 10

// extMap is a node's cached extent map.
type extMap struct {
	gen uint64 // the node's dataGen it was fetched at
	m   p9ext.ExtentMap
	bad bool // the server refused: read through 9P until the file changes
}

// extentMap returns the node's extent map for reading at off, fetching
// it on fid when needed, or nil when the read must go through 9P.
func (n *node) extentMap(ctx context.Context, fid ninep.Fid, off int64) *p9ext.ExtentMap {
	if n.fsys.cfg.direct == nil {
		return nil
	}
	n.xmMu.Lock()
	defer n.xmMu.Unlock()
	n.mu.Lock()
	gen, busy := n.dataGen, n.writers > 0 || n.changing > 0
	small := n.attrValid && n.attr.Size < directMinSize
	x := n.xm
	n.mu.Unlock()
	if busy || small {
		return nil
	}
	if x != nil && x.gen == gen {
		if x.bad {
			return nil
		}
		if uint64(off) < x.m.End && uint64(off) >= x.m.Start {
			return &x.m
		}
	}
	m, err := n.fetchExtents(ctx, fid, uint64(off))
	x = &extMap{gen: gen, m: m, bad: err != nil}
	n.mu.Lock()
	// A map fetched across a change may predate it: use it for no read.
	ok := n.dataGen == gen && n.writers == 0 && n.changing == 0
	if ok {
		n.xm = x
	}
	n.mu.Unlock()
	if !ok || x.bad {
		if err != nil {
			n.fsys.log.Debug("no extent map: reading through the guest", "err", err)
		}
		return nil
	}
	return &x.m
}

// dataChange marks a change of the file's size or data made without an
// open file (truncate by name) while it is in flight: no extent map is
// used meanwhile, and none fetched before it is kept. Writes need a
// file open for writing, which has the same effect (writers).
func (n *node) dataChange() (done func()) {
	n.mu.Lock()
	n.changing++
	n.dataGen++
	n.xm = nil
	n.mu.Unlock()
	return func() {
		n.mu.Lock()
		n.changing--
		n.dataGen++
		n.xm = nil
		n.mu.Unlock()
	}
}

// openedForWrite counts a file opened for writing (delta 1) or released
// (-1): maps are not used while any is open, and one fetched before is
// dropped.
func (n *node) openedForWrite(delta int) {
	n.mu.Lock()
	n.writers += delta
	n.dataGen++
	n.xm = nil
	n.mu.Unlock()
}

// fetchExtents asks the server for the file's map from start on.
func (n *node) fetchExtents(ctx context.Context, fid ninep.Fid, start uint64) (p9ext.ExtentMap, error) {
	c := n.fsys.c
	xf, size, err := c.XattrWalk(ctx, fid, p9ext.ExtentsName(start, maxMapExtents))
	if err != nil {
		return p9ext.ExtentMap{}, err
	}
	defer c.Clunk(xf)
	max := 64 + 32*maxMapExtents
	b, err := c.ReadAll(ctx, xf, size, max)
	if err != nil {
		return p9ext.ExtentMap{}, err
	}
	return p9ext.DecodeExtents(b)
}

// readMapped reads dest at off through m from the device; ok is false
// when it cannot (the range leaves the map, or an extent lies outside
// the device): the caller reads through 9P.
func (d *directRead) readMapped(m *p9ext.ExtentMap, dest []byte, off int64) (n int, ok bool) {
	if off < 0 || uint64(off) < m.Start {
		return 0, false
	}
	pos := uint64(off)
	end := min(pos+uint64(len(dest)), m.Size)
	if pos >= end {
		return 0, pos >= m.Size // at or past the end of the file
	}
	if end > m.End {
		return 0, false
	}
	ext := m.Extents
	i := sort.Search(len(ext), func(i int) bool { return ext[i].Logical+ext[i].Length > pos })
	for pos < end {
		buf := dest[pos-uint64(off) : end-uint64(off)]
		if i >= len(ext) || ext[i].Logical >= end {
			clear(buf) // a hole up to the end
			break
		}
		e := ext[i]
		if pos < e.Logical { // a hole before the extent
			hole := buf[:e.Logical-pos]
			clear(hole)
			pos = e.Logical
			continue
		}
		chunk := buf[:min(e.Logical+e.Length, end)-pos]
		if e.Flags&p9ext.ExtentUnwritten != 0 {
			clear(chunk)
		} else {
			at := e.Physical + (pos - e.Logical)
			if at+uint64(len(chunk)) > uint64(d.size) || at+uint64(len(chunk)) < at {
				return 0, false
			}
			if got, _ := d.r.ReadAt(chunk, int64(at)); got != len(chunk) {
				return 0, false
			}
		}
		pos += uint64(len(chunk))
		i++
	}
	d.bytes.Add(int64(end - uint64(off)))
	return int(end - uint64(off)), true
}

// directRead is the device WithDirectRead gives.
type directRead struct {
	r     io.ReaderAt
	size  int64
	bytes atomic.Int64 // read from the device so far
}
