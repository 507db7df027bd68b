// Package p9ext defines qmount's extensions to 9P2000.L. Both ends of the
// protocol are qmount's own (p9server in the guest, client on the host), so
// the extensions ride on standard messages and never break a plain client:
//
//   - READDIRPLUS: 9P2000.L has no readdir that returns attributes, so
//     listing a directory of N entries with attributes would cost N walks.
//     A client instead walks the directory's xattr named
//     ReaddirPlusName(offset, maxBytes) (Txattrwalk + Tread + Tclunk) and
//     gets a batch of entries, each with its QID, full attributes and the
//     names of its extended attributes. Real xattr names always carry a
//     namespace prefix ("user.", "trusted.", "security.", "system."), so
//     the name can never collide with a real attribute.
//   - READDIR of names: the same request with ReaddirNamesName lists
//     entries without reading their inodes (QID and file type from the
//     directory entry: only Valid.Mode is set, and only Attr.Mode's S_IFMT
//     bits), except subdirectories, which carry full attributes (the
//     kernel looks each up to descend into it): what find needs, at the
//     cost of a plain getdents and a stat per subdirectory on the server. A server without it answers the name
//     as an unknown xattr (an error), and the client asks for full batches.
//   - READDIRTREE (tree.go): ReaddirTreeName asks a directory for the
//     listings of several of its subdirectories at once, so a tree of many
//     small directories (find, stat of every file) is read in a few
//     requests instead of a walk and a READDIRPLUS per directory.
//   - EXTENTS (extents.go): ExtentsName asks a regular file where its
//     data lies on the guest's block device (FIEMAP, dirty pages written
//     back first), so a host that sees the same device reads the data
//     itself instead of through the VM.
//
// The batch encoding is little-endian and versioned by its magic.
package p9ext

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/hugelgupf/p9/p9"
)

// ReaddirPlusPrefix starts every READDIRPLUS xattr name.
const ReaddirPlusPrefix = "qmount.readdirplus:"

// Limits a decoder enforces; an encoder must stay within them.
const (
	// MaxNameLen is the longest entry or xattr name (Linux NAME_MAX / XATTR_NAME_MAX).
	MaxNameLen = 255
	// MaxXattrNames is the most xattr names listed for one entry. An
	// entry with more is sent with XattrsKnown false.
	MaxXattrNames = 64
	// MaxBatchBytes bounds one batch (the server never sends more, the
	// client never accepts more).
	MaxBatchBytes = 4 << 20
)

var magic = [4]byte{'Q', 'R', 'D', '1'}

// ErrBadBatch reports a malformed or oversized batch.
var ErrBadBatch = errors.New("p9ext: malformed readdirplus batch")

// ReaddirPlusName is the xattr name that asks for the entries of a directory
// starting after the readdir cookie offset (0 for the start), in a batch of at
// most maxBytes bytes.
func ReaddirPlusName(offset uint64, maxBytes uint32) string {
	return ReaddirPlusPrefix + strconv.FormatUint(offset, 10) + ":" + strconv.FormatUint(uint64(maxBytes), 10)
}

// namesSuffix ends a ReaddirNamesName.
const namesSuffix = ":names"

// ReaddirNamesName is the xattr name that asks for the entries after the
// cookie offset like ReaddirPlusName, without attributes.
func ReaddirNamesName(offset uint64, maxBytes uint32) string {
	return ReaddirPlusName(offset, maxBytes) + namesSuffix
}

// ParseReaddirPlusName is the inverse of ReaddirPlusName and
// ReaddirNamesName (namesOnly). ok is false when name is not a
// READDIRPLUS request.
func ParseReaddirPlusName(name string) (offset uint64, maxBytes uint32, namesOnly, ok bool) {
	rest, found := strings.CutPrefix(name, ReaddirPlusPrefix)
	if !found {
		return 0, 0, false, false
	}
	rest, namesOnly = strings.CutSuffix(rest, namesSuffix)
	o, m, found := strings.Cut(rest, ":")
	if !found {
		return 0, 0, false, false
	}
	off, err := strconv.ParseUint(o, 10, 64)
	if err != nil {
		return 0, 0, false, false
	}
	mb, err := strconv.ParseUint(m, 10, 32)
	if err != nil || mb == 0 {
		return 0, 0, false, false
	}
	if mb > MaxBatchBytes {
		mb = MaxBatchBytes
	}
	return off, uint32(mb), namesOnly, true
}

// Entry is one directory entry with its attributes.
type Entry struct {
	Name   string
	Offset uint64 // readdir cookie to resume after this entry
	Type   p9.QIDType
	QID    p9.QID
	Valid  p9.AttrMask // which fields of Attr are set; empty if the stat failed
	Attr   p9.Attr
	// XattrsKnown says Xattrs is the complete list of the entry's xattr
	// names (so a getxattr of any other name is ENODATA without asking).
	XattrsKnown bool
	Xattrs      []string
}

// Batch is the decoded answer to one READDIRPLUS request.
type Batch struct {
	Entries []Entry
	// EOF is set when the directory has no entries after the last one.
	EOF bool
}

const (
	headerLen = 4 + 4 + 1
	// fixedEntryLen: name length (2), offset (8), type (1), qid (13),
	// valid mask (8), attr (mode, uid, gid: 4 each; 15 uint64s), xattrs
	// known flag (1), xattr count (2).
	attrLen       = 4 + 4 + 4 + 8*15
	fixedEntryLen = 2 + 8 + 1 + 13 + 8 + attrLen + 1 + 2
)

// EntrySize is the encoded size of e, so an encoder can stop before a limit.
func EntrySize(e *Entry) int {
	n := fixedEntryLen + len(e.Name)
	if e.XattrsKnown {
		for _, x := range e.Xattrs {
			n += 2 + len(x)
		}
	}
	return n
}

// Encoder builds a batch incrementally.
type Encoder struct {
	buf   []byte
	count uint32
	limit int
}

// NewEncoder starts a batch of at most maxBytes bytes.
func NewEncoder(maxBytes uint32) *Encoder {
	limit := int(maxBytes)
	if limit > MaxBatchBytes {
		limit = MaxBatchBytes
	}
	b := make([]byte, headerLen, min(limit, 64<<10))
	copy(b, magic[:])
	return &Encoder{buf: b, limit: limit}
}

// Add appends e and reports whether it fitted. A name longer than
// MaxNameLen is an error; too many xattr names are dropped by clearing
// XattrsKnown.
func (enc *Encoder) Add(e Entry) (bool, error) {
	if len(e.Name) == 0 || len(e.Name) > MaxNameLen {
		return false, fmt.Errorf("p9ext: entry name of %d bytes", len(e.Name))
	}
	if len(e.Xattrs) > MaxXattrNames {
		e.XattrsKnown, e.Xattrs = false, nil
	}
	for _, x := range e.Xattrs {
		if len(x) == 0 || len(x) > MaxNameLen {
			e.XattrsKnown, e.Xattrs = false, nil
			break
		}
	}
	if !e.XattrsKnown {
		e.Xattrs = nil
	}
	if len(enc.buf)+EntrySize(&e) > enc.limit {
		return false, nil
	}
	enc.buf = appendEntry(enc.buf, &e)
	enc.count++
	return true, nil
}

// Len is the number of entries added.
func (enc *Encoder) Len() int { return int(enc.count) }

// Bytes finishes the batch.
func (enc *Encoder) Bytes(eof bool) []byte {
	binary.LittleEndian.PutUint32(enc.buf[4:], enc.count)
	if eof {
		enc.buf[8] = 1
	} else {
		enc.buf[8] = 0
	}
	return enc.buf
}

func appendEntry(b []byte, e *Entry) []byte {
	le := binary.LittleEndian
	b = le.AppendUint16(b, uint16(len(e.Name)))
	b = append(b, e.Name...)
	b = le.AppendUint64(b, e.Offset)
	b = append(b, byte(e.Type))
	b = append(b, byte(e.QID.Type))
	b = le.AppendUint32(b, e.QID.Version)
	b = le.AppendUint64(b, e.QID.Path)
	b = le.AppendUint64(b, maskBits(e.Valid))
	a := &e.Attr
	b = le.AppendUint32(b, uint32(a.Mode))
	b = le.AppendUint32(b, uint32(a.UID))
	b = le.AppendUint32(b, uint32(a.GID))
	for _, v := range [...]uint64{
		uint64(a.NLink), uint64(a.RDev), a.Size, a.BlockSize, a.Blocks,
		a.ATimeSeconds, a.ATimeNanoSeconds, a.MTimeSeconds, a.MTimeNanoSeconds,
		a.CTimeSeconds, a.CTimeNanoSeconds, a.BTimeSeconds, a.BTimeNanoSeconds,
		a.Gen, a.DataVersion,
	} {
		b = le.AppendUint64(b, v)
	}
	if e.XattrsKnown {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = le.AppendUint16(b, uint16(len(e.Xattrs)))
	for _, x := range e.Xattrs {
		b = le.AppendUint16(b, uint16(len(x)))
		b = append(b, x...)
	}
	return b
}

// Decode parses a batch, validating every length and name. It never
// panics on hostile input.
func Decode(b []byte) (Batch, error) {
	var out Batch
	count, eof, err := parseHeader(b, magic)
	if err != nil {
		return out, err
	}
	out.EOF = eof
	if uint64(count)*fixedEntryLen > uint64(len(b)) {
		return out, ErrBadBatch
	}
	out.Entries = make([]Entry, 0, count)
	r := reader{b: b[headerLen:]}
	for i := uint32(0); i < count; i++ {
		var e Entry
		e.Name = r.name()
		if !ValidName(e.Name) {
			return out, fmt.Errorf("%w: entry name %q", ErrBadBatch, e.Name)
		}
		e.Offset = r.u64()
		e.Type = p9.QIDType(r.u8())
		e.QID.Type = p9.QIDType(r.u8())
		e.QID.Version = r.u32()
		e.QID.Path = r.u64()
		e.Valid = maskFromBits(r.u64())
		a := &e.Attr
		a.Mode = p9.FileMode(r.u32())
		a.UID = p9.UID(r.u32())
		a.GID = p9.GID(r.u32())
		a.NLink = p9.NLink(r.u64())
		a.RDev = p9.Dev(r.u64())
		a.Size = r.u64()
		a.BlockSize = r.u64()
		a.Blocks = r.u64()
		a.ATimeSeconds, a.ATimeNanoSeconds = r.u64(), r.u64()
		a.MTimeSeconds, a.MTimeNanoSeconds = r.u64(), r.u64()
		a.CTimeSeconds, a.CTimeNanoSeconds = r.u64(), r.u64()
		a.BTimeSeconds, a.BTimeNanoSeconds = r.u64(), r.u64()
		a.Gen, a.DataVersion = r.u64(), r.u64()
		switch r.u8() {
		case 0:
		case 1:
			e.XattrsKnown = true
		default:
			return out, ErrBadBatch
		}
		n := int(r.u16())
		if n > MaxXattrNames || (!e.XattrsKnown && n != 0) {
			return out, ErrBadBatch
		}
		for j := 0; j < n; j++ {
			x := r.name()
			if x == "" || strings.IndexByte(x, 0) >= 0 {
				return out, ErrBadBatch
			}
			e.Xattrs = append(e.Xattrs, x)
		}
		if r.bad {
			return out, ErrBadBatch
		}
		out.Entries = append(out.Entries, e)
	}
	if len(r.b) != 0 {
		return out, ErrBadBatch
	}
	return out, nil
}

// parseHeader checks the header shared by batches and trees (magic m,
// entry count, a 0/1 flag) and the size bound, and returns the count and
// the flag.
func parseHeader(b []byte, m [4]byte) (count uint32, flag bool, err error) {
	if len(b) < headerLen || len(b) > MaxBatchBytes || [4]byte(b[:4]) != m {
		return 0, false, ErrBadBatch
	}
	switch b[8] {
	case 0:
	case 1:
		flag = true
	default:
		return 0, false, ErrBadBatch
	}
	return binary.LittleEndian.Uint32(b[4:]), flag, nil
}

// ValidName reports whether s can be a single path component.
func ValidName(s string) bool {
	return s != "" && s != "." && s != ".." && len(s) <= MaxNameLen &&
		strings.IndexByte(s, '/') < 0 && strings.IndexByte(s, 0) < 0
}

type reader struct {
	b   []byte
	bad bool
}

func (r *reader) take(n int) []byte {
	if r.bad || n > len(r.b) {
		r.bad = true
		return make([]byte, n)
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() uint8   { return r.take(1)[0] }
func (r *reader) u16() uint16 { return binary.LittleEndian.Uint16(r.take(2)) }
func (r *reader) u32() uint32 { return binary.LittleEndian.Uint32(r.take(4)) }
func (r *reader) u64() uint64 { return binary.LittleEndian.Uint64(r.take(8)) }

func (r *reader) name() string {
	n := int(r.u16())
	if n > MaxNameLen {
		r.bad = true
		return ""
	}
	return string(r.take(n))
}

var maskOrder = func(m *p9.AttrMask) []*bool {
	return []*bool{&m.Mode, &m.NLink, &m.UID, &m.GID, &m.RDev, &m.ATime, &m.MTime,
		&m.CTime, &m.INo, &m.Size, &m.Blocks, &m.BTime, &m.Gen, &m.DataVersion}
}

// maskBits uses the 9P2000.L getattr mask bit layout.
func maskBits(m p9.AttrMask) uint64 {
	var v uint64
	for i, f := range maskOrder(&m) {
		if *f {
			v |= 1 << i
		}
	}
	return v
}

func maskFromBits(v uint64) p9.AttrMask {
	var m p9.AttrMask
	for i, f := range maskOrder(&m) {
		*f = v&(1<<i) != 0
	}
	return m
}
