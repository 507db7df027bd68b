package ninep

import (
	"encoding/binary"

	"github.com/hugelgupf/p9/p9"
)

// Message types of 9P2000.L and its Google extensions (p9/p9.go).
const (
	tRlerror      = 7
	tTstatfs      = 8
	tTlopen       = 12
	tTlcreate     = 14
	tTsymlink     = 16
	tTmknod       = 18
	tTrename      = 20
	tTreadlink    = 22
	tTgetattr     = 24
	tTsetattr     = 26
	tTxattrwalk   = 30
	tTxattrcreate = 32
	tTreaddir     = 40
	tTfsync       = 50
	tTlock        = 52
	tTgetlock     = 54
	tTlink        = 70
	tTmkdir       = 72
	tTrenameat    = 74
	tTunlinkat    = 76
	tTversion     = 100
	tTattach      = 104
	tTflush       = 108
	tTwalk        = 110
	tTread        = 116
	tTwrite       = 118
	tTclunk       = 120
	tTwalkgetattr = 126
	tTucreate     = 128
	tTumkdir      = 130
	tTumknod      = 132
	tTusymlink    = 134
)

var typeNames = map[uint8]string{
	tTstatfs: "Tstatfs", tTlopen: "Tlopen", tTlcreate: "Tlcreate", tTsymlink: "Tsymlink",
	tTmknod: "Tmknod", tTrename: "Trename", tTreadlink: "Treadlink", tTgetattr: "Tgetattr",
	tTsetattr: "Tsetattr", tTxattrwalk: "Txattrwalk", tTxattrcreate: "Txattrcreate",
	tTreaddir: "Treaddir", tTfsync: "Tfsync", tTlock: "Tlock", tTgetlock: "Tgetlock",
	tTlink: "Tlink", tTmkdir: "Tmkdir", tTrenameat: "Trenameat", tTunlinkat: "Tunlinkat",
	tTversion: "Tversion", tTattach: "Tattach", tTflush: "Tflush", tTwalk: "Twalk",
	tTread: "Tread", tTwrite: "Twrite", tTclunk: "Tclunk", tTwalkgetattr: "Twalkgetattr",
	tTucreate: "Tucreate", tTumkdir: "Tumkdir", tTumknod: "Tumknod", tTusymlink: "Tusymlink",
}

const (
	headerLen = 7 // size[4] type[1] tag[2]
	noTag     = 0xFFFF
	// NoFid is the "no fid" value of 9P.
	NoFid Fid = 0xFFFFFFFF
	// ioHeader is the largest fixed part of Tread/Rread/Twrite around
	// their payload (Twrite: header + fid[4] offset[8] count[4]).
	ioHeader = headerLen + 4 + 8 + 4
	// maxWalkNames is the most names one Twalk may carry.
	maxWalkNames = 16
	// qidLen and attrLen are encoded sizes.
	qidLen  = 13
	attrLen = 4 + 4 + 4 + 15*8
)

// enc appends little-endian 9P fields.
type enc struct{ b []byte }

func (e *enc) u8(v uint8)   { e.b = append(e.b, v) }
func (e *enc) u16(v uint16) { e.b = binary.LittleEndian.AppendUint16(e.b, v) }
func (e *enc) u32(v uint32) { e.b = binary.LittleEndian.AppendUint32(e.b, v) }
func (e *enc) u64(v uint64) { e.b = binary.LittleEndian.AppendUint64(e.b, v) }
func (e *enc) str(s string) {
	e.u16(uint16(len(s)))
	e.b = append(e.b, s...)
}

// dec reads little-endian 9P fields; any overrun marks it bad and yields
// zero values, so decoding hostile input never panics.
type dec struct {
	b   []byte
	bad bool
}

func (d *dec) take(n int) []byte {
	if d.bad || n < 0 || n > len(d.b) {
		d.bad = true
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *dec) u8() uint8 {
	if v := d.take(1); v != nil {
		return v[0]
	}
	return 0
}

func (d *dec) u16() uint16 {
	if v := d.take(2); v != nil {
		return binary.LittleEndian.Uint16(v)
	}
	return 0
}

func (d *dec) u32() uint32 {
	if v := d.take(4); v != nil {
		return binary.LittleEndian.Uint32(v)
	}
	return 0
}

func (d *dec) u64() uint64 {
	if v := d.take(8); v != nil {
		return binary.LittleEndian.Uint64(v)
	}
	return 0
}

func (d *dec) str() string {
	n := int(d.u16())
	return string(d.take(n))
}

func (d *dec) qid() p9.QID {
	return p9.QID{Type: p9.QIDType(d.u8()), Version: d.u32(), Path: d.u64()}
}

// done reports whether the whole body was consumed without overrun.
func (d *dec) done() bool { return !d.bad && len(d.b) == 0 }

func (d *dec) attrMask() p9.AttrMask {
	v := d.u64()
	return p9.AttrMask{
		Mode: v&0x1 != 0, NLink: v&0x2 != 0, UID: v&0x4 != 0, GID: v&0x8 != 0,
		RDev: v&0x10 != 0, ATime: v&0x20 != 0, MTime: v&0x40 != 0, CTime: v&0x80 != 0,
		INo: v&0x100 != 0, Size: v&0x200 != 0, Blocks: v&0x400 != 0, BTime: v&0x800 != 0,
		Gen: v&0x1000 != 0, DataVersion: v&0x2000 != 0,
	}
}

func (d *dec) attr() p9.Attr {
	var a p9.Attr
	a.Mode = p9.FileMode(d.u32())
	a.UID = p9.UID(d.u32())
	a.GID = p9.GID(d.u32())
	a.NLink = p9.NLink(d.u64())
	a.RDev = p9.Dev(d.u64())
	a.Size = d.u64()
	a.BlockSize = d.u64()
	a.Blocks = d.u64()
	a.ATimeSeconds, a.ATimeNanoSeconds = d.u64(), d.u64()
	a.MTimeSeconds, a.MTimeNanoSeconds = d.u64(), d.u64()
	a.CTimeSeconds, a.CTimeNanoSeconds = d.u64(), d.u64()
	a.BTimeSeconds, a.BTimeNanoSeconds = d.u64(), d.u64()
	a.Gen, a.DataVersion = d.u64(), d.u64()
	return a
}

func maskBits(m p9.AttrMask) uint64 {
	var v uint64
	for i, f := range []bool{m.Mode, m.NLink, m.UID, m.GID, m.RDev, m.ATime, m.MTime,
		m.CTime, m.INo, m.Size, m.Blocks, m.BTime, m.Gen, m.DataVersion} {
		if f {
			v |= 1 << i
		}
	}
	return v
}

func setMaskBits(m p9.SetAttrMask) uint32 {
	var v uint32
	for i, f := range []bool{m.Permissions, m.UID, m.GID, m.Size, m.ATime, m.MTime,
		m.CTime, m.ATimeNotSystemTime, m.MTimeNotSystemTime} {
		if f {
			v |= 1 << i
		}
	}
	return v
}
