package p9ext

import (
	"encoding/binary"
	"errors"
	"strconv"
	"strings"
)

// EXTENTS: where a regular file's data lies on the guest's block device,
// so that the host can read it from the disk image itself instead of
// through the VM (see client.WithDirectRead). A client walks the file's
// xattr named ExtentsName(start, max) (Txattrwalk + Tread + Tclunk) and
// gets an ExtentMap. The server answers only when it was told that the
// host sees the device (p9server.WithExtentMaps), only for file systems
// whose FIEMAP addresses are device offsets, and only when every extent
// is plain data or a hole: it first writes the file's dirty pages back
// (FIEMAP_FLAG_SYNC), and refuses files whose data may be elsewhere
// (inline, encrypted, compressed, delayed allocation, data journalling).

// ExtentsPrefix starts every EXTENTS xattr name.
const ExtentsPrefix = "qmount.extents:"

// MaxExtents bounds the extents of one map (the server never sends more,
// the client never accepts more).
const MaxExtents = 1 << 16

// Extent flags a map may carry (the others make the server refuse).
const (
	// ExtentUnwritten: allocated but reads as zeros (FIEMAP_EXTENT_UNWRITTEN).
	ExtentUnwritten = 1 << 0
)

// Extent is one piece of a file: Length bytes at Logical in the file lie
// at Physical on the device.
type Extent struct {
	Logical, Physical, Length uint64
	Flags                     uint32
}

// ExtentMap describes the file's data from Start to End: bytes in that
// range covered by no extent are a hole (zeros). Size is the file's size
// when the map was made; End is at least Size when the map is complete.
type ExtentMap struct {
	Size, Start, End uint64
	Extents          []Extent // sorted by Logical, not overlapping
}

// ErrBadExtents reports a malformed or inconsistent map.
var ErrBadExtents = errors.New("p9ext: malformed extent map")

var extentsMagic = [4]byte{'Q', 'E', 'X', '1'}

const (
	extentsHeaderLen = 4 + 8*3 + 4
	extentLen        = 8*3 + 4
)

// ExtentsName is the xattr name that asks for the map of the file from
// byte start on, with at most max extents.
func ExtentsName(start uint64, max uint32) string {
	return ExtentsPrefix + strconv.FormatUint(start, 10) + ":" + strconv.FormatUint(uint64(max), 10)
}

// ParseExtentsName is the inverse of ExtentsName; ok is false when name is
// not an EXTENTS request.
func ParseExtentsName(name string) (start uint64, max uint32, ok bool) {
	rest, found := strings.CutPrefix(name, ExtentsPrefix)
	if !found {
		return 0, 0, false
	}
	s, m, found := strings.Cut(rest, ":")
	if !found {
		return 0, 0, false
	}
	st, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	mx, err := strconv.ParseUint(m, 10, 32)
	if err != nil || mx == 0 {
		return 0, 0, false
	}
	return st, uint32(min(mx, MaxExtents)), true
}

// EncodeExtents encodes m (at most MaxExtents extents).
func EncodeExtents(m *ExtentMap) ([]byte, error) {
	if len(m.Extents) > MaxExtents {
		return nil, ErrBadExtents
	}
	le := binary.LittleEndian
	b := make([]byte, 0, extentsHeaderLen+extentLen*len(m.Extents))
	b = append(b, extentsMagic[:]...)
	b = le.AppendUint64(b, m.Size)
	b = le.AppendUint64(b, m.Start)
	b = le.AppendUint64(b, m.End)
	b = le.AppendUint32(b, uint32(len(m.Extents)))
	for _, e := range m.Extents {
		b = le.AppendUint64(b, e.Logical)
		b = le.AppendUint64(b, e.Physical)
		b = le.AppendUint64(b, e.Length)
		b = le.AppendUint32(b, e.Flags)
	}
	return b, nil
}

// DecodeExtents parses and checks a map: extents sorted, not
// overlapping, non-empty, within [Start, End), with no overflow and no
// unknown flag. It never panics on hostile input.
func DecodeExtents(b []byte) (ExtentMap, error) {
	var m ExtentMap
	if len(b) < extentsHeaderLen || [4]byte(b[:4]) != extentsMagic {
		return m, ErrBadExtents
	}
	le := binary.LittleEndian
	m.Size, m.Start, m.End = le.Uint64(b[4:]), le.Uint64(b[12:]), le.Uint64(b[20:])
	n := le.Uint32(b[28:])
	if n > MaxExtents || len(b) != extentsHeaderLen+int(n)*extentLen || m.End < m.Start {
		return m, ErrBadExtents
	}
	m.Extents = make([]Extent, n)
	prev := m.Start
	for i := range m.Extents {
		p := b[extentsHeaderLen+i*extentLen:]
		e := Extent{Logical: le.Uint64(p), Physical: le.Uint64(p[8:]), Length: le.Uint64(p[16:]), Flags: le.Uint32(p[24:])}
		end := e.Logical + e.Length
		if e.Length == 0 || end < e.Logical || e.Physical+e.Length < e.Physical ||
			e.Logical < prev || end > m.End || e.Flags&^ExtentUnwritten != 0 {
			return m, ErrBadExtents
		}
		prev = end
		m.Extents[i] = e
	}
	return m, nil
}
