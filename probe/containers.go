package probe

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
)

// LUKSInfo describes a LUKS header.
type LUKSInfo struct {
	// Version is 1 or 2.
	Version int `json:"version"`
	// Cipher is the data encryption, e.g. "aes-xts-plain64".
	Cipher string `json:"cipher,omitempty"`
	// Hash is the LUKS1 header hash (LUKS2 keeps one per keyslot).
	Hash string `json:"hash,omitempty"`
	// PayloadOffset is where the encrypted data starts, in bytes.
	PayloadOffset int64 `json:"payload_offset,omitempty"`
	// KeySlots is the number of active key slots.
	KeySlots int `json:"key_slots"`
	// Subsystem is the LUKS2 subsystem label.
	Subsystem string `json:"subsystem,omitempty"`
	// HeaderOffset is where the header used was found: 0 for the primary,
	// else the offset of the LUKS2 secondary header.
	HeaderOffset int64 `json:"header_offset,omitempty"`
	// PBKDF is the LUKS2 key slots' key derivation ("pbkdf2", "argon2i",
	// "argon2id"; the most memory-hungry one when they differ); LUKS1 is
	// always pbkdf2.
	PBKDF string `json:"pbkdf,omitempty"`
	// PBKDFMemoryKiB is the largest argon2 memory cost of a key slot: what
	// opening it needs in RAM.
	PBKDFMemoryKiB int64 `json:"pbkdf_memory_kib,omitempty"`
}

// BitLockerInfo describes a BitLocker volume header.
type BitLockerInfo struct {
	// Kind is "vista", "win7" or "togo" (BitLocker To Go).
	Kind string `json:"kind"`
	// MetadataOffset is the offset of the first FVE metadata block.
	MetadataOffset int64 `json:"metadata_offset,omitempty"`
}

// ZFSInfo describes a ZFS pool member (vdev label).
type ZFSInfo struct {
	Pool     string `json:"pool,omitempty"`
	PoolGUID string `json:"pool_guid,omitempty"`
	VdevGUID string `json:"vdev_guid,omitempty"`
	Version  uint64 `json:"version"`
}

var luks2SecondaryOffsets = []int64{0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000}

// probeLUKS identifies LUKS1 and LUKS2 (also by a LUKS2 secondary header
// when the primary one is damaged).
func probeLUKS(g region) (*Content, error) {
	h, err := g.read(0, 512)
	if err != nil {
		return nil, err
	}
	off := int64(0)
	if !hasMagic(h, 0, "LUKS\xba\xbe") {
		h = nil
		for _, o := range luks2SecondaryOffsets {
			s, err := g.read(o, 512)
			if err != nil {
				if err == errShort {
					break
				}
				return nil, err
			}
			if hasMagic(s, 0, "SKUL\xba\xbe") {
				h, off = s, o
				break
			}
		}
		if h == nil {
			return nil, nil
		}
	}
	ver := be16(h, 6)
	c := &Content{Type: "crypto_LUKS", Version: fmt.Sprintf("%d", ver)}
	info := &LUKSInfo{Version: int(ver), HeaderOffset: off}
	switch ver {
	case 1:
		c.UUID = string(rtrim(cstr(h[168:208])))
		info.Cipher = string(cstr(h[8:40]))
		if m := string(cstr(h[40:72])); m != "" {
			info.Cipher += "-" + m
		}
		info.Hash = string(cstr(h[72:104]))
		info.PayloadOffset = int64(be32(h, 104)) * 512
		info.PBKDF = "pbkdf2"
		for i := 0; i < 8; i++ {
			if be32(h, 208+i*48) == 0x00AC71F3 {
				info.KeySlots++
			}
		}
	case 2:
		c.UUID = string(rtrim(cstr(h[168:208])))
		c.Label = label(h[24:72])
		info.Subsystem = idLabel(h[208:256])
		luks2JSON(g, off, be64(h, 8), info)
	}
	c.LUKS = info
	return c, nil
}

// luks2JSON fills info from the LUKS2 JSON metadata area, bounded by the
// header size (at most 4 MiB as LUKS2 allows).
func luks2JSON(g region, off int64, hdrSize uint64, info *LUKSInfo) {
	if hdrSize <= 4096 || hdrSize > 4<<20 {
		return
	}
	b, err := g.read(off+4096, int(hdrSize-4096))
	if err != nil {
		return
	}
	b = cstr(b)
	var meta struct {
		Keyslots map[string]json.RawMessage `json:"keyslots"`
		Segments map[string]struct {
			Type       string `json:"type"`
			Offset     string `json:"offset"`
			Encryption string `json:"encryption"`
		} `json:"segments"`
	}
	if err := json.Unmarshal(b, &meta); err != nil {
		return
	}
	info.KeySlots = len(meta.Keyslots)
	for _, raw := range meta.Keyslots {
		var ks struct {
			KDF struct {
				Type   string `json:"type"`
				Memory int64  `json:"memory"`
			} `json:"kdf"`
		}
		if json.Unmarshal(raw, &ks) != nil || ks.KDF.Type == "" {
			continue
		}
		if info.PBKDF == "" || ks.KDF.Memory > info.PBKDFMemoryKiB {
			info.PBKDF = ks.KDF.Type
		}
		if ks.KDF.Memory > info.PBKDFMemoryKiB {
			info.PBKDFMemoryKiB = ks.KDF.Memory
		}
	}
	keys := make([]string, 0, len(meta.Segments))
	for k := range meta.Segments {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, _ := strconv.Atoi(keys[i])
		b, _ := strconv.Atoi(keys[j])
		return a < b
	})
	for _, k := range keys {
		s := meta.Segments[k]
		if s.Type != "crypt" {
			continue
		}
		info.Cipher = s.Encryption
		if o, err := strconv.ParseInt(s.Offset, 10, 64); err == nil && o >= 0 {
			info.PayloadOffset = o
		}
		break
	}
}

// bitlockerHeader is blkid's get_bitlocker_headers.
func bitlockerHeader(g region, bs []byte) (kind string, fveOff int64, fve []byte, ok bool) {
	switch {
	case bytes.HasPrefix(bs, []byte("\xeb\x52\x90-FVE-FS-")):
		return "vista", 0, nil, true
	case bytes.HasPrefix(bs, []byte("\xeb\x58\x90-FVE-FS-")):
		kind, fveOff = "win7", int64(le64(bs, 176))
	case bytes.HasPrefix(bs, []byte("\xeb\x58\x90MSWIN4.1")):
		kind, fveOff = "togo", int64(le64(bs, 440))
	default:
		return "", 0, nil, false
	}
	if fveOff <= 0 {
		return "", 0, nil, false
	}
	f, err := g.read(fveOff, 12)
	if err != nil || !hasMagic(f, 0, "-FVE-FS-") {
		return "", 0, nil, false
	}
	return kind, fveOff, f, true
}

// isBitLocker reports whether the boot sector bs starts a BitLocker volume.
func isBitLocker(g region, bs []byte) bool {
	_, _, _, ok := bitlockerHeader(g, bs)
	return ok
}

// probeBitLocker identifies BitLocker (Vista, 7+, To Go) volumes.
func probeBitLocker(g region) (*Content, error) {
	bs, err := g.read(0, 512)
	if err != nil {
		return nil, err
	}
	kind, fveOff, fve, ok := bitlockerHeader(g, bs)
	if !ok {
		return nil, nil
	}
	c := &Content{Type: "BitLocker", BitLocker: &BitLockerInfo{Kind: kind, MetadataOffset: fveOff}}
	if kind == "win7" {
		if serial := le32(bs, 67); serial != 0 {
			c.UUID = fmt.Sprintf("%016d", int32(serial))
		}
	}
	if fve != nil {
		c.Version = fmt.Sprintf("%d", le16(fve, 10))
	}
	return c, nil
}

// probeSwap identifies Linux swap (v0 and v1) and suspend images.
func probeSwap(g region) (*Content, error) {
	head, err := g.read(0, 8)
	if err != nil {
		return nil, err
	}
	toi := string(head) == "\xed\xc3\x02\xe9\x98\x56\xe5\x0c"
	for _, page := range []int64{0x1000, 0x2000, 0x4000, 0x8000, 0x10000} {
		m, err := g.read(page-10, 10)
		if err != nil {
			return nil, nil
		}
		var typ, ver string
		switch {
		case string(m[:9]) == "S1SUSPEND":
			typ, ver = "swsuspend", "s1suspend"
		case string(m[:9]) == "S2SUSPEND":
			typ, ver = "swsuspend", "s2suspend"
		case string(m[:9]) == "ULSUSPEND":
			typ, ver = "swsuspend", "ulsuspend"
		case string(m) == "LINHIB0001":
			typ, ver = "swsuspend", "linhib0001"
		case string(m) == "SWAP-SPACE":
			typ, ver = "swap", "0"
		case string(m) == "SWAPSPACE2":
			typ, ver = "swap", "1"
		default:
			continue
		}
		if toi && typ == "swap" {
			return nil, nil
		}
		c := &Content{Type: typ, Version: ver, sbOff: page - 10, sbLen: 10}
		if ver == "0" {
			return c, nil
		}
		h, err := g.read(1024, 512)
		if err != nil {
			return nil, err
		}
		if ver == "1" {
			if v := le32(h, 0); v != 1 && be32(h, 0) != 1 {
				return nil, nil
			}
			if le32(h, 4) == 0 {
				return nil, nil
			}
		}
		if le32(h, 172) == 0 && le32(h, 176) == 0 {
			if h[28] != 0 {
				c.Label = label(h[28:44])
			}
			c.UUID = uuidString(h[12:28])
		}
		lastPage := uint64(le32(h, 4))
		if le32(h, 0) != 1 {
			lastPage = uint64(be32(h, 4))
		}
		c.Size = clampSize(lastPage+1, uint64(page))
		c.BlockSize = page
		if typ == "swap" {
			c.BlockSize = 0 // blkid reports none for swap
		}
		return c, nil
	}
	return nil, nil
}

// ZFS vdev label layout.
const (
	zfsLabelSize    = 256 << 10
	zfsUberOff      = 128 << 10
	zfsNVOff        = 16 << 10
	zfsUberMagic    = 0x00bab10c
	zfsUberMagicSwp = 0x0cb1ba0000000000
)

// probeZFS looks for uberblocks in the four vdev labels and reads the pool
// name and GUIDs from the label's nvlist.
func probeZFS(g region) (*Content, error) {
	align := g.size % zfsLabelSize
	offsets := []int64{0, zfsLabelSize, g.size - 2*zfsLabelSize - align, g.size - zfsLabelSize - align}
	found := 0
	var ubVersion uint64
	var ubOff, lastOff int64
	for _, off := range offsets {
		if off < 0 {
			continue
		}
		lastOff = off
		lab, err := g.read(off, zfsLabelSize)
		if err != nil {
			return nil, err
		}
		for i := 0; i < 128; i++ {
			o := zfsUberOff + i*1024
			switch le64(lab, o) {
			case zfsUberMagic:
				found++
				ubVersion, ubOff = le64(lab, o+8), off+int64(o)
			case zfsUberMagicSwp:
				found++
				ubVersion, ubOff = be64(lab, o+8), off+int64(o)
			}
		}
		if found >= 4 {
			break
		}
	}
	if found < 4 {
		return nil, nil
	}
	c := &Content{Type: "zfs_member", Version: fmt.Sprintf("%d", ubVersion), sbOff: ubOff, sbLen: 8}
	info := &ZFSInfo{Version: ubVersion}
	zfsNVList(g, (lastOff&^(zfsLabelSize-1))+zfsNVOff, c, info)
	c.Label, c.UUID, c.UUIDSub = info.Pool, info.PoolGUID, info.VdevGUID
	c.ZFS = info
	return c, nil
}

// zfsNVList walks the XDR nvlist as blkid does (first 4 KiB only).
func zfsNVList(g region, off int64, c *Content, info *ZFSInfo) {
	p, err := g.read(off, 4096)
	if err != nil {
		return
	}
	const (
		typeUint64 = 8
		typeString = 9
		typeDir    = 19
	)
	pos := 12
	left := 4096 - 12
	level := 0
	for left > 12 {
		size := int(be32(p, pos))
		nameLen := be32(p, pos+8)
		nameSize := (int(nameLen) + 3) &^ 3
		if size == 0 {
			if level == 0 {
				break
			}
			level--
			size = 8
		} else {
			if size > left || uint64(nameSize)+12 > uint64(size) || nameLen > 4096 {
				break
			}
			maxVal := size - (nameSize + 12)
			name := string(field(p, pos+12, int(nameLen)))
			v := pos + 12 + nameSize
			if maxVal >= 16 && be32(p, v) == typeDir {
				size = 12 + nameSize + 16
				level++
			} else if level == 0 {
				switch name {
				case "name":
					if maxVal >= 12 && be32(p, v) == typeString {
						n := int(be32(p, v+8))
						if n+12 <= maxVal {
							info.Pool = label(p[v+12 : v+12+n])
						}
					}
				case "guid", "pool_guid":
					if maxVal >= 16 && be32(p, v) == typeUint64 {
						val := be64(p, v+8)
						if name == "guid" {
							info.VdevGUID = strconv.FormatUint(val, 10)
						} else if val != 0 {
							info.PoolGUID = strconv.FormatUint(val, 10)
						}
					}
				case "ashift":
					if maxVal >= 16 && be32(p, v) == typeUint64 {
						if a := be64(p, v+8); a < 32 {
							c.BlockSize = 1 << a
						}
					}
				}
			} else if name == "ashift" && maxVal >= 16 && be32(p, v) == typeUint64 {
				if a := be64(p, v+8); a < 32 {
					c.BlockSize = 1 << a
				}
			}
		}
		if size > left {
			break
		}
		left -= size
		pos += size
	}
}
