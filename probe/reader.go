package probe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// maxRead caps any single read from the device. No on-disk size field can make
// the probe read (or allocate) more than this at once.
const maxRead = 4 << 20

// errShort reports a read past the end of the probed region.
var errShort = errors.New("read past end of region")

// region is a bounded window [off, off+size) of an io.ReaderAt. All offsets
// given to its methods are relative to the start of the window.
type region struct {
	r    io.ReaderAt
	off  int64
	size int64
	// budget limits the total bytes one Detect may read, so that hostile
	// metadata cannot turn a probe into a scan of the whole device.
	budget *int64
}

// read returns n bytes at off. Reads outside the region, of negative or
// oversized lengths, or beyond the read budget fail.
func (g region) read(off int64, n int) ([]byte, error) {
	if n < 0 || n > maxRead {
		return nil, fmt.Errorf("read of %d bytes refused", n)
	}
	if off < 0 || off > g.size || int64(n) > g.size-off {
		return nil, errShort
	}
	if g.budget != nil {
		if *g.budget < int64(n) {
			return nil, errors.New("read budget exhausted")
		}
		*g.budget -= int64(n)
	}
	b := make([]byte, n)
	m, err := g.r.ReadAt(b, g.off+off)
	if m == n {
		return b, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return nil, errShort
	}
	return nil, &readError{err}
}

// sub returns the window [off, off+size) inside g, clipped to g.
func (g region) sub(off, size int64) region {
	if off < 0 {
		off = 0
	}
	if off > g.size {
		off = g.size
	}
	if size < 0 || size > g.size-off {
		size = g.size - off
	}
	return region{r: g.r, off: g.off + off, size: size, budget: g.budget}
}

// Little helpers for fixed-layout structures. They never panic: out-of-range
// accesses read as zero, so a truncated buffer yields "not this format".

func le16(b []byte, off int) uint16 {
	if off < 0 || off+2 > len(b) {
		return 0
	}
	return binary.LittleEndian.Uint16(b[off:])
}

func le32(b []byte, off int) uint32 {
	if off < 0 || off+4 > len(b) {
		return 0
	}
	return binary.LittleEndian.Uint32(b[off:])
}

func le64(b []byte, off int) uint64 {
	if off < 0 || off+8 > len(b) {
		return 0
	}
	return binary.LittleEndian.Uint64(b[off:])
}

func be16(b []byte, off int) uint16 {
	if off < 0 || off+2 > len(b) {
		return 0
	}
	return binary.BigEndian.Uint16(b[off:])
}

func be32(b []byte, off int) uint32 {
	if off < 0 || off+4 > len(b) {
		return 0
	}
	return binary.BigEndian.Uint32(b[off:])
}

func be64(b []byte, off int) uint64 {
	if off < 0 || off+8 > len(b) {
		return 0
	}
	return binary.BigEndian.Uint64(b[off:])
}

// field returns b[off:off+n], or nil when that is out of range.
func field(b []byte, off, n int) []byte {
	if off < 0 || n < 0 || off+n > len(b) {
		return nil
	}
	return b[off : off+n]
}

// hasMagic reports whether b holds magic at off.
func hasMagic(b []byte, off int, magic string) bool {
	f := field(b, off, len(magic))
	return f != nil && string(f) == magic
}
