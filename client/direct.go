package client

import (
	"context"
	"errors"
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/qmount/qmount/client/ninep"
	"github.com/qmount/qmount/internal/p9ext"
)

// Direct reads: with WithDirectRead the client reads a file's data from
// the device the guest's file system lives on (the disk image or block
// device on the host) instead of through the VM, at the places the
// server's extent map (p9ext EXTENTS) gives. Only the map crosses the
// VM: one round trip per file instead of the data, and no guest CPU.
//
// A map is used only while it is exact. It is fetched with the file's
// dirty pages written back first (FIEMAP_FLAG_SYNC on the server). Its
// state lives per guest inode (inoData, keyed by inode number, shared
// by every node of that number: hard links, and a node taken for gone
// while another name still reaches the file), and:
//   - it is not used while the file is open for writing through the
//     mount (writes and shared mmap go through the guest, whose page
//     cache is then ahead of the disk);
//   - every open for writing, release of one, truncate, and new file
//     identity with the number (a reused inode number) moves the
//     inode's generation on, which drops the map and makes one being
//     fetched unusable;
//   - a change that can free blocks (truncate, open for writing) waits
//     for direct reads in flight to finish before it is sent, so a read
//     never returns blocks that meanwhile hold another file's data.
//
// The guest's file system changes only through this mount. Reads
// outside the map, files the server will not map (other file systems,
// inline, encrypted or compressed data), and any extent outside the
// device go through 9P as before.

// maxMapExtents bounds the extents asked for per map request.
const maxMapExtents = 4096

// directMinSize: smaller files are read through 9P (the map costs the
// same round trip as reading them).
const directMinSize = 64 << 10

// inoData is the direct-read state of one guest inode.
type inoData struct {
	fetch sync.Mutex   // serializes fetching xm
	io    sync.RWMutex // held shared by direct reads in flight
	mu    sync.Mutex   // guards the fields below
	gen   uint64       // moved on by every change (see above)
	// writers counts the inode's opens for writing through the mount,
	// changing the changes of its data in flight without one.
	writers, changing int
	xm                *extMap
}

// extMap is a cached extent map.
type extMap struct {
	gen uint64 // the inoData gen it was fetched at
	m   p9ext.ExtentMap
	bad bool // the server refused: read through 9P until the file changes
}

// usable reports whether the state lets a direct read use a map of gen.
func (d *inoData) usable(gen uint64) bool {
	return d.gen == gen && d.writers == 0 && d.changing == 0
}

// bump moves the generation on and drops the map.
func (d *inoData) bump() {
	d.gen++
	d.xm = nil
}

// data returns the direct-read state of inode number ino, or nil
// without WithDirectRead.
func (f *fsys) data(ino uint64) *inoData {
	if f.cfg.direct == nil {
		return nil
	}
	f.dataMu.Lock()
	defer f.dataMu.Unlock()
	d := f.datas[ino]
	if d == nil {
		d = &inoData{}
		if f.datas == nil {
			f.datas = map[uint64]*inoData{}
		}
		f.datas[ino] = d
	}
	return d
}

// dataRenew is called when inode number ino gets a new file identity
// (the number may now be another file's): any map of it is dropped.
func (f *fsys) dataRenew(ino uint64) {
	if f.cfg.direct == nil {
		return
	}
	f.dataMu.Lock()
	d := f.datas[ino]
	f.dataMu.Unlock()
	if d != nil {
		d.mu.Lock()
		d.bump()
		d.mu.Unlock()
	}
}

// dataForget drops the state of ino when nothing uses it (the kernel
// forgot a node of it); another node of the number starts a new one.
func (f *fsys) dataForget(ino uint64) {
	if f.cfg.direct == nil {
		return
	}
	f.dataMu.Lock()
	defer f.dataMu.Unlock()
	if d := f.datas[ino]; d != nil {
		d.mu.Lock()
		idle := d.writers == 0 && d.changing == 0
		d.mu.Unlock()
		if idle {
			delete(f.datas, ino)
		}
	}
}

// readDirect reads dest at off from the device if the inode's map
// allows (fetching it on fid when needed); ok false: read through 9P.
func (n *node) readDirect(ctx context.Context, fid ninep.Fid, dest []byte, off int64) (int, bool) {
	d := n.fsys.data(n.StableAttr().Ino)
	if d == nil {
		return 0, false
	}
	m, gen := n.extentMap(ctx, d, fid, off)
	if m == nil {
		return 0, false
	}
	d.io.RLock()
	defer d.io.RUnlock()
	d.mu.Lock()
	ok := d.usable(gen)
	d.mu.Unlock()
	if !ok {
		return 0, false
	}
	return n.fsys.cfg.direct.readMapped(m, dest, off)
}

// extentMap returns the inode's extent map for reading at off and the
// generation it belongs to, fetching it on fid when needed, or nil when
// the read must go through 9P.
func (n *node) extentMap(ctx context.Context, d *inoData, fid ninep.Fid, off int64) (*p9ext.ExtentMap, uint64) {
	d.fetch.Lock()
	defer d.fetch.Unlock()
	d.mu.Lock()
	gen, busy := d.gen, d.writers > 0 || d.changing > 0
	x := d.xm
	d.mu.Unlock()
	n.mu.Lock()
	small := n.attrValid && n.attr.Size < directMinSize
	n.mu.Unlock()
	if busy || small {
		return nil, 0
	}
	if x != nil && x.gen == gen {
		if x.bad {
			return nil, 0
		}
		complete := x.m.End >= x.m.Size
		if uint64(off) >= x.m.Start && (uint64(off) < x.m.End || complete) {
			return &x.m, gen
		}
	}
	m, err := n.fetchExtents(ctx, fid, uint64(off))
	// The p9 library answers every failed xattr read with EINVAL: the
	// server refused this file. Other errors (a timeout) are not kept.
	if err != nil && !errors.Is(err, syscall.EINVAL) {
		n.fsys.log.Debug("no extent map: reading through the guest", "err", err)
		return nil, 0
	}
	x = &extMap{gen: gen, m: m, bad: err != nil}
	d.mu.Lock()
	// A map fetched across a change may predate it: it is not kept.
	ok := d.usable(gen)
	if ok {
		d.xm = x
	}
	d.mu.Unlock()
	if !ok || x.bad {
		return nil, 0
	}
	return &x.m, gen
}

// dataChange marks a change of the file's size or data made without an
// open file (truncate by name) while it is in flight: no extent map is
// used meanwhile, none fetched before is kept, and it waits for direct
// reads in flight. Writes need a file open for writing (openedForWrite).
func (n *node) dataChange() (done func()) {
	d := n.fsys.data(n.StableAttr().Ino)
	if d == nil {
		return func() {}
	}
	d.mu.Lock()
	d.changing++
	d.bump()
	d.mu.Unlock()
	d.io.Lock() // direct reads that started before are done
	d.io.Unlock()
	return func() {
		d.mu.Lock()
		d.changing--
		d.bump()
		d.mu.Unlock()
	}
}

// openedForWrite counts a file opened for writing (delta 1: before any
// write can be sent, waiting for direct reads in flight) or released
// (-1).
func (n *node) openedForWrite(delta int) {
	d := n.fsys.data(n.StableAttr().Ino)
	if d == nil {
		return
	}
	d.mu.Lock()
	d.writers += delta
	d.bump()
	d.mu.Unlock()
	if delta > 0 {
		d.io.Lock()
		d.io.Unlock()
	}
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
	if testHookDirectRead != nil {
		testHookDirectRead()
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

// testHookDirectRead, when set (tests), runs before a read through a map.
var testHookDirectRead func()
