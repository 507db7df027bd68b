package p9ext

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"github.com/hugelgupf/p9/p9"
)

// READDIRTREE: a client that has read a directory's entries and found
// subdirectories among them asks, on the directory's fid, for the xattr
// named ReaddirTreeName(after, maxBytes, maxDirs) (Txattrwalk + Tread +
// Tclunk, like READDIRPLUS) and gets the listings, with attributes, of
// the next maxDirs subdirectories after the directory's readdir cookie
// after: one request instead of a walk and a READDIRPLUS per
// subdirectory (find, stat of every file of a tree). A server without it
// answers the name as an unknown xattr (an error). ReaddirTreeNamesName
// asks for the listings without attributes (as ReaddirNamesName).
//
// The tree encoding: magic "QRT1", record count (u32), done flag (u8: no
// subdirectory follows the last record in the directory); then each
// record: the subdirectory's cookie in the directory (u64), its name,
// QID, and its listing as a READDIRPLUS batch (u32 length, then the
// batch). Every listing but the first is complete (its batch's EOF set):
// a server stops before a subdirectory whose listing does not fit.

// ReaddirTreePrefix starts every READDIRTREE xattr name.
const ReaddirTreePrefix = "qmount.readdirtree:"

// MaxTreeDirs bounds the subdirectories one READDIRTREE request lists.
const MaxTreeDirs = 256

var treeMagic = [4]byte{'Q', 'R', 'T', '1'}

// ReaddirTreeName is the xattr name that asks for the listings of the
// next maxDirs subdirectories after cookie after, in at most maxBytes.
func ReaddirTreeName(after uint64, maxBytes uint32, maxDirs int) string {
	return ReaddirTreePrefix + strconv.FormatUint(after, 10) + ":" +
		strconv.FormatUint(uint64(maxBytes), 10) + ":" + strconv.Itoa(maxDirs)
}

// ReaddirTreeNamesName asks for the same listings as ReaddirTreeName
// without attributes (as ReaddirNamesName: QID and file type only).
func ReaddirTreeNamesName(after uint64, maxBytes uint32, maxDirs int) string {
	return ReaddirTreeName(after, maxBytes, maxDirs) + namesSuffix
}

// ParseReaddirTreeName is the inverse of ReaddirTreeName and
// ReaddirTreeNamesName (namesOnly), bounds clamped to MaxBatchBytes and
// MaxTreeDirs; ok is false when name is not a READDIRTREE request.
func ParseReaddirTreeName(name string) (after uint64, maxBytes uint32, maxDirs int, namesOnly, ok bool) {
	rest, found := strings.CutPrefix(name, ReaddirTreePrefix)
	if !found {
		return 0, 0, 0, false, false
	}
	rest, namesOnly = strings.CutSuffix(rest, namesSuffix)
	f := strings.Split(rest, ":")
	if len(f) != 3 {
		return 0, 0, 0, false, false
	}
	after, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil {
		return 0, 0, 0, false, false
	}
	mb, err := strconv.ParseUint(f[1], 10, 32)
	if err != nil || mb == 0 {
		return 0, 0, 0, false, false
	}
	md, err := strconv.ParseUint(f[2], 10, 32)
	if err != nil || md == 0 {
		return 0, 0, 0, false, false
	}
	return after, uint32(min(mb, MaxBatchBytes)), int(min(md, MaxTreeDirs)), namesOnly, true
}

// SubListing is one subdirectory's listing in a READDIRTREE answer.
type SubListing struct {
	Name   string
	Offset uint64 // the subdirectory's cookie in the directory listed
	QID    p9.QID
	Batch  Batch
}

// Tree is the decoded answer to one READDIRTREE request.
type Tree struct {
	Subs []SubListing
	// Done is set when no subdirectory follows the last one listed.
	Done bool
}

const (
	treeHeaderLen = 4 + 4 + 1
	// subFixedLen: cookie (8), name length (2), qid (13), batch length (4).
	subFixedLen = 8 + 2 + 13 + 4
)

// SubOverhead is the encoded size of a record without its name and
// batch, so an encoder can bound a listing by what is left.
const SubOverhead = subFixedLen

// TreeEncoder builds a READDIRTREE answer.
type TreeEncoder struct {
	buf   []byte
	count uint32
	limit int
}

// NewTreeEncoder starts an answer of at most maxBytes bytes.
func NewTreeEncoder(maxBytes uint32) *TreeEncoder {
	limit := min(int(maxBytes), MaxBatchBytes)
	b := make([]byte, treeHeaderLen, min(limit, 64<<10))
	copy(b, treeMagic[:])
	return &TreeEncoder{buf: b, limit: limit}
}

// Room is the number of bytes a batch of a subdirectory named name may
// take in the next record (negative when not even an empty one fits).
func (t *TreeEncoder) Room(name string) int {
	return t.limit - len(t.buf) - subFixedLen - len(name)
}

// Add appends the listing batch (from Encoder.Bytes) of the subdirectory
// name with QID qid and cookie off, and reports whether it fitted.
func (t *TreeEncoder) Add(name string, off uint64, qid p9.QID, batch []byte) (bool, error) {
	if !ValidName(name) {
		return false, fmt.Errorf("p9ext: subdirectory name %q", name)
	}
	if len(batch) > t.Room(name) {
		return false, nil
	}
	le := binary.LittleEndian
	b := le.AppendUint64(t.buf, off)
	b = le.AppendUint16(b, uint16(len(name)))
	b = append(b, name...)
	b = append(b, byte(qid.Type))
	b = le.AppendUint32(b, qid.Version)
	b = le.AppendUint64(b, qid.Path)
	b = le.AppendUint32(b, uint32(len(batch)))
	t.buf = append(b, batch...)
	t.count++
	return true, nil
}

// Len is the number of records added.
func (t *TreeEncoder) Len() int { return int(t.count) }

// Bytes finishes the answer.
func (t *TreeEncoder) Bytes(done bool) []byte {
	binary.LittleEndian.PutUint32(t.buf[4:], t.count)
	t.buf[8] = 0
	if done {
		t.buf[8] = 1
	}
	return t.buf
}

// DecodeTree parses a READDIRTREE answer, validating every length and
// name, that no subdirectory repeats and that every listing but the
// first is complete. It never panics on hostile input.
func DecodeTree(b []byte) (Tree, error) {
	var out Tree
	count, done, err := parseHeader(b, treeMagic) // the same header as a batch's
	if err != nil {
		return out, err
	}
	out.Done = done
	if count > MaxTreeDirs || uint64(count)*subFixedLen > uint64(len(b)) {
		return out, ErrBadBatch
	}
	seen := make(map[string]bool, count)
	r := reader{b: b[treeHeaderLen:]}
	for i := uint32(0); i < count; i++ {
		var s SubListing
		s.Offset = r.u64()
		s.Name = r.name()
		s.QID.Type = p9.QIDType(r.u8())
		s.QID.Version = r.u32()
		s.QID.Path = r.u64()
		n := int(r.u32())
		if r.bad || n > len(r.b) || !ValidName(s.Name) || seen[s.Name] || s.QID.Type&p9.TypeDir == 0 {
			return out, fmt.Errorf("%w: subdirectory record %d", ErrBadBatch, i)
		}
		seen[s.Name] = true
		batch, err := Decode(r.take(n))
		if err != nil {
			return out, err
		}
		if i > 0 && !batch.EOF {
			return out, fmt.Errorf("%w: incomplete listing of %q", ErrBadBatch, s.Name)
		}
		s.Batch = batch
		out.Subs = append(out.Subs, s)
	}
	if r.bad || len(r.b) != 0 {
		return out, ErrBadBatch
	}
	return out, nil
}
