package probe

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// LVMInfo describes an LVM2 physical volume and the volume group metadata
// found on it.
type LVMInfo struct {
	// PVUUID is this physical volume's UUID (also Content.UUID).
	PVUUID string `json:"pv_uuid"`
	// DeviceSize is the PV size recorded in the label, in bytes.
	DeviceSize int64 `json:"device_size,omitempty"`
	// VGName and VGUUID name the volume group; empty for an orphan PV.
	VGName string `json:"vg_name,omitempty"`
	VGUUID string `json:"vg_uuid,omitempty"`
	// SeqNo is the metadata sequence number (the highest copy wins).
	SeqNo int64 `json:"seqno,omitempty"`
	// ExtentSize is the VG's physical extent size in bytes.
	ExtentSize int64 `json:"extent_size,omitempty"`
	// PVName is this PV's key in the metadata ("pv0").
	PVName string `json:"pv_name,omitempty"`
	// PVs lists all physical volumes of the VG.
	PVs []LVMPV `json:"pvs,omitempty"`
	// LVs lists the logical volumes.
	LVs []LVMLV `json:"lvs,omitempty"`
}

// LVMPV is one physical volume in the VG metadata.
type LVMPV struct {
	Name string `json:"name"`
	UUID string `json:"uuid"`
	// Device is the device path LVM last saw (a hint only).
	Device  string `json:"device,omitempty"`
	Size    int64  `json:"size,omitempty"`
	PEStart int64  `json:"pe_start"`
	PECount int64  `json:"pe_count"`
}

// LVMLV is one logical volume.
type LVMLV struct {
	Name string `json:"name"`
	UUID string `json:"uuid"`
	// Size in bytes (sum of the segments' extents).
	Size int64 `json:"size"`
	// Visible is false for LVM-internal volumes (thin pool data, RAID
	// images, ...), which are not offered to users.
	Visible  bool         `json:"visible"`
	Segments []LVMSegment `json:"segments,omitempty"`
}

// LVMSegment is one segment of a logical volume.
type LVMSegment struct {
	StartExtent int64 `json:"start_extent"`
	ExtentCount int64 `json:"extent_count"`
	// Type is "striped" (also linear), "mirror", "raid1", "thin-pool", ...
	Type string `json:"type"`
	// Stripes names the PVs (or sub-LVs) and their starting extents.
	Stripes []LVMStripe `json:"stripes,omitempty"`
}

// LVMStripe is one area of a segment.
type LVMStripe struct {
	PV      string `json:"pv"`
	StartPE int64  `json:"start_pe"`
}

// maxLVMText caps the metadata text read from a PV.
const maxLVMText = 1 << 20

// lvm2CRC is LVM's calc_crc with its initial value.
func lvm2CRC(crc uint32, b []byte) uint32 {
	tab := [16]uint32{
		0x00000000, 0x1db71064, 0x3b6e20c8, 0x26d930ac,
		0x76dc4190, 0x6b6b51f4, 0x4db26158, 0x5005713c,
		0xedb88320, 0xf00f9344, 0xd6d6a3e8, 0xcb61b38c,
		0x9b64c2b0, 0x86d3d2d4, 0xa00ae278, 0xbdbdf21c,
	}
	for _, c := range b {
		crc ^= uint32(c)
		crc = (crc >> 4) ^ tab[crc&0xf]
		crc = (crc >> 4) ^ tab[crc&0xf]
	}
	return crc
}

const lvm2InitialCRC = 0xf597a6cf

// lvmUUID inserts LVM's dashes into a 32-character id.
func lvmUUID(id []byte) string {
	var sb strings.Builder
	for i, b := 0, uint32(1); i < len(id); i, b = i+1, b<<1 {
		if b&0x4444440 != 0 {
			sb.WriteByte('-')
		}
		sb.WriteByte(id[i])
	}
	return validUTF8([]byte(sb.String()))
}

// probeLVM2 identifies an LVM2 physical volume and parses the VG metadata.
func probeLVM2(g region) (*Content, error) {
	head, err := g.read(0, 2048)
	if err != nil {
		return nil, err
	}
	for _, sector := range []int{1, 0, 2, 3} {
		lab := head[sector*512 : sector*512+512]
		if !hasMagic(lab, 0, "LABELONE") || !hasMagic(lab, 0x18, "LVM2 001") {
			continue
		}
		if le64(lab, 8) != uint64(sector) {
			continue
		}
		if lvm2CRC(lvm2InitialCRC, lab[20:]) != le32(lab, 16) {
			continue
		}
		pvOff := int(le32(lab, 20))
		if pvOff < 32 || pvOff+40 > 512 {
			pvOff = 32
		}
		pvUUID := lab[pvOff : pvOff+32]
		info := &LVMInfo{PVUUID: lvmUUID(pvUUID), DeviceSize: clampSize(le64(lab, pvOff+32), 1)}
		c := &Content{Type: "LVM2_member", Version: "LVM2 001", UUID: info.PVUUID, LVM: info, Size: info.DeviceSize}
		// Data areas, then metadata areas, each list ended by a zero entry.
		p := pvOff + 40
		for p+16 <= 512 && le64(lab, p) != 0 {
			p += 16
		}
		p += 16
		var mdas []uint64
		for p+16 <= 512 && le64(lab, p) != 0 {
			mdas = append(mdas, le64(lab, p))
			p += 16
		}
		for _, mda := range mdas {
			text, err := lvmMetadataText(g, int64(mda))
			if err != nil || text == "" {
				continue
			}
			if err := parseLVMMetadata(text, info); err == nil {
				break
			}
		}
		return c, nil
	}
	return nil, nil
}

// lvmMetadataText reads the current metadata text from the metadata area
// whose header is at off, following the circular buffer's wrap.
func lvmMetadataText(g region, off int64) (string, error) {
	h, err := g.read(off, 512)
	if err != nil {
		return "", err
	}
	if !hasMagic(h, 4, " LVM2 x[5A%r0N*>") {
		return "", errors.New("no metadata area header")
	}
	if lvm2CRC(lvm2InitialCRC, h[4:]) != le32(h, 0) {
		return "", errors.New("metadata area header checksum mismatch")
	}
	start, size := le64(h, 24), le64(h, 32)
	if int64(start) != off || size <= 512 {
		return "", errors.New("bad metadata area geometry")
	}
	for p := 40; p+24 <= 512; p += 24 {
		rOff, rSize, rSum, rFlags := le64(h, p), le64(h, p+8), le32(h, p+16), le32(h, p+20)
		if rOff == 0 {
			break
		}
		if rFlags&1 != 0 { // RAW_LOCN_IGNORED
			continue
		}
		if rSize == 0 || rSize > maxLVMText || rOff >= size || rSize > size-512 {
			return "", errors.New("bad metadata location")
		}
		first := rSize
		if rOff+rSize > size {
			first = size - rOff
		}
		text, err := g.read(off+int64(rOff), int(first))
		if err != nil {
			return "", err
		}
		if first < rSize {
			rest, err := g.read(off+512, int(rSize-first))
			if err != nil {
				return "", err
			}
			text = append(text, rest...)
		}
		if lvm2CRC(lvm2InitialCRC, text) != rSum {
			return "", errors.New("metadata checksum mismatch")
		}
		return string(cstr(text)), nil
	}
	return "", nil
}

// lvmNode is a section of LVM's configuration text format.
type lvmNode struct {
	name string
	vals map[string]lvmValue
	kids []*lvmNode
}

// lvmValue is a string, number or list value.
type lvmValue struct {
	str  string
	num  int64
	isN  bool
	list []lvmValue
}

func (n *lvmNode) child(name string) *lvmNode {
	for _, k := range n.kids {
		if k.name == name {
			return k
		}
	}
	return nil
}

func (n *lvmNode) str(key string) string { return n.vals[key].str }
func (n *lvmNode) num(key string) int64  { return n.vals[key].num }

// lvmTokens splits LVM metadata text into tokens. Strings keep their quotes
// off and escapes resolved; comments are dropped.
func lvmTokens(s string) ([]string, []bool, error) {
	var toks []string
	var quoted []bool
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case strings.IndexByte("{}[]=,", c) >= 0:
			toks, quoted = append(toks, string(c)), append(quoted, false)
			i++
		case c == '"':
			var sb strings.Builder
			i++
			for i < len(s) && s[i] != '"' {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				sb.WriteByte(s[i])
				i++
			}
			if i >= len(s) {
				return nil, nil, errors.New("unterminated string")
			}
			i++
			toks, quoted = append(toks, sb.String()), append(quoted, true)
		default:
			j := i
			for j < len(s) && strings.IndexByte("{}[]=,#\" \t\r\n", s[j]) < 0 {
				j++
			}
			toks, quoted = append(toks, s[i:j]), append(quoted, false)
			i = j
		}
	}
	return toks, quoted, nil
}

type lvmParser struct {
	toks   []string
	quoted []bool
	pos    int
}

func (p *lvmParser) peek() (string, bool) {
	if p.pos >= len(p.toks) {
		return "", false
	}
	return p.toks[p.pos], p.quoted[p.pos]
}

// section parses items until '}' (or the end at depth 0).
func (p *lvmParser) section(n *lvmNode, depth int) error {
	if depth > 32 {
		return errors.New("metadata nested too deep")
	}
	for {
		t, q := p.peek()
		if p.pos >= len(p.toks) {
			if depth == 0 {
				return nil
			}
			return errors.New("unterminated section")
		}
		if t == "}" && !q {
			if depth == 0 {
				return errors.New("unbalanced '}'")
			}
			p.pos++
			return nil
		}
		p.pos++
		next, _ := p.peek()
		switch next {
		case "{":
			p.pos++
			k := &lvmNode{name: t, vals: map[string]lvmValue{}}
			if err := p.section(k, depth+1); err != nil {
				return err
			}
			n.kids = append(n.kids, k)
		case "=":
			p.pos++
			v, err := p.value(0)
			if err != nil {
				return err
			}
			n.vals[t] = v
		default:
			return fmt.Errorf("unexpected token %q", next)
		}
	}
}

func (p *lvmParser) value(depth int) (lvmValue, error) {
	t, q := p.peek()
	if p.pos >= len(p.toks) {
		return lvmValue{}, errors.New("missing value")
	}
	p.pos++
	if q {
		return lvmValue{str: t}, nil
	}
	if t == "[" {
		if depth > 8 {
			return lvmValue{}, errors.New("list nested too deep")
		}
		var l lvmValue
		for {
			t, q := p.peek()
			if p.pos >= len(p.toks) {
				return lvmValue{}, errors.New("unterminated list")
			}
			if t == "]" && !q {
				p.pos++
				return l, nil
			}
			if t == "," && !q {
				p.pos++
				continue
			}
			v, err := p.value(depth + 1)
			if err != nil {
				return lvmValue{}, err
			}
			l.list = append(l.list, v)
		}
	}
	if n, err := strconv.ParseInt(t, 10, 64); err == nil {
		return lvmValue{num: n, isN: true, str: t}, nil
	}
	return lvmValue{str: t}, nil
}

// parseLVMMetadata fills the VG part of info from metadata text.
func parseLVMMetadata(text string, info *LVMInfo) error {
	toks, quoted, err := lvmTokens(text)
	if err != nil {
		return err
	}
	root := &lvmNode{vals: map[string]lvmValue{}}
	p := &lvmParser{toks: toks, quoted: quoted}
	if err := p.section(root, 0); err != nil {
		return err
	}
	var vg *lvmNode
	for _, k := range root.kids {
		if k.child("physical_volumes") != nil {
			vg = k
			break
		}
	}
	if vg == nil {
		return errors.New("no volume group in metadata")
	}
	info.VGName = vg.name
	info.VGUUID = vg.str("id")
	info.SeqNo = vg.num("seqno")
	ext := vg.num("extent_size")
	if ext < 0 || ext > 1<<40 {
		ext = 0
	}
	info.ExtentSize = ext * 512
	for _, pv := range vg.child("physical_volumes").kids {
		e := LVMPV{
			Name:    pv.name,
			UUID:    pv.str("id"),
			Device:  pv.str("device"),
			Size:    clampSize(uint64(max(pv.num("dev_size"), 0)), 512),
			PEStart: clampSize(uint64(max(pv.num("pe_start"), 0)), 512),
			PECount: max(pv.num("pe_count"), 0),
		}
		info.PVs = append(info.PVs, e)
		if e.UUID == info.PVUUID {
			info.PVName = e.Name
		}
	}
	if lvs := vg.child("logical_volumes"); lvs != nil {
		for _, lv := range lvs.kids {
			e := LVMLV{Name: lv.name, UUID: lv.str("id")}
			for _, s := range lv.vals["status"].list {
				if s.str == "VISIBLE" {
					e.Visible = true
				}
			}
			var extents int64
			for _, seg := range lv.kids {
				if !strings.HasPrefix(seg.name, "segment") {
					continue
				}
				s := LVMSegment{
					StartExtent: max(seg.num("start_extent"), 0),
					ExtentCount: max(seg.num("extent_count"), 0),
					Type:        seg.str("type"),
				}
				areas := seg.vals["stripes"].list
				if len(areas) == 0 {
					areas = seg.vals["mirrors"].list
				}
				for i := 0; i+1 < len(areas); i += 2 {
					s.Stripes = append(s.Stripes, LVMStripe{PV: areas[i].str, StartPE: areas[i+1].num})
				}
				if len(areas) == 0 {
					for _, a := range seg.vals["raids"].list {
						s.Stripes = append(s.Stripes, LVMStripe{PV: a.str})
					}
				}
				if s.ExtentCount < 1<<40 {
					extents += s.ExtentCount
				}
				e.Segments = append(e.Segments, s)
			}
			e.Size = clampSize(uint64(extents), uint64(info.ExtentSize))
			info.LVs = append(info.LVs, e)
		}
	}
	return nil
}
