package probe

import "fmt"

const (
	fat12Max = 0xFF4
	fat16Max = 0xFFF4
	fat32Max = 0x0FFFFFF6
)

// fatGeometry is what fatValid derives from a FAT boot sector.
type fatGeometry struct {
	sectorSize   uint32
	reserved     uint32
	fatSize      uint32 // sectors of all FATs
	clusterCount uint32
	sectCount    uint32
}

// fatMagicShort reports which of blkid's vfat magics matches first, and
// whether it is one of the short (<= 2 bytes) ones that need extra checks.
func fatMagic(bs []byte) (found, short bool) {
	long := []struct {
		off   int
		magic string
	}{{0x52, "MSWIN"}, {0x52, "FAT32   "}, {0x36, "MSDOS"}, {0x36, "FAT16   "}, {0x36, "FAT12   "}, {0x36, "FAT     "}}
	for _, m := range long {
		if hasMagic(bs, m.off, m.magic) {
			return true, false
		}
	}
	if bs[0] == 0xEB || bs[0] == 0xE9 || hasMagic(bs, 0x1fe, "\x55\xaa") {
		return true, true
	}
	return false, false
}

// fatValid is blkid's fat_valid_superblock, including its uint32 arithmetic.
func fatValid(g region, bs []byte) (fatGeometry, bool) {
	var geo fatGeometry
	found, short := fatMagic(bs)
	if !found {
		return geo, false
	}
	if short {
		if !hasMagic(bs, 0x1fe, "\x55\xaa") {
			return geo, false
		}
		if hasMagic(bs, 0x36, "JFS     ") || hasMagic(bs, 0x36, "HPFS    ") {
			return geo, false
		}
	}
	fats := uint32(bs[0x10])
	reserved := uint32(le16(bs, 0x0e))
	media := bs[0x15]
	clusterSize := uint32(bs[0x0d])
	if fats == 0 || reserved == 0 || !(media >= 0xf8 || media == 0xf0) || !isPow2(uint64(clusterSize)) {
		return geo, false
	}
	ss := uint32(le16(bs, 0x0b))
	if !isPow2(uint64(ss)) || ss < 512 || ss > 4096 {
		return geo, false
	}
	dirEntries := uint32(le16(bs, 0x11))
	sectCount := uint32(le16(bs, 0x13))
	if sectCount == 0 {
		sectCount = le32(bs, 0x20)
	}
	fatLength := uint32(le16(bs, 0x16))
	if fatLength == 0 {
		fatLength = le32(bs, 0x24)
	}
	fatSize := fatLength * fats
	dirSize := (dirEntries*32 + ss - 1) / ss
	clusters := (sectCount - (reserved + fatSize + dirSize)) / clusterSize
	var max uint32
	if le16(bs, 0x16) == 0 && le32(bs, 0x24) != 0 {
		max = fat32Max
	} else if clusters > fat12Max {
		max = fat16Max
	} else {
		max = fat12Max
	}
	if clusters > max {
		return geo, false
	}
	if isBitLocker(g, bs) {
		return geo, false
	}
	return fatGeometry{sectorSize: ss, reserved: reserved, fatSize: fatSize, clusterCount: clusters, sectCount: sectCount}, true
}

// fatLabel searches a FAT directory for the volume label entry.
func fatLabel(g region, off uint64, entries uint32) ([]byte, bool) {
	if entries == 0 {
		return nil, false
	}
	dir, err := g.read(int64(off), int(entries)*32)
	if err != nil {
		return nil, false
	}
	for i := uint32(0); i < entries; i++ {
		e := dir[i*32 : i*32+32]
		if e[0] == 0 {
			break
		}
		if e[0] == 0xE5 || le16(e, 20) != 0 || le16(e, 26) != 0 || e[11]&0x3f == 0x0f {
			continue
		}
		if e[11]&(0x08|0x10) == 0x08 {
			name := append([]byte(nil), e[:11]...)
			if name[0] == 0x05 {
				name[0] = 0xE5
			}
			return name, true
		}
	}
	return nil, false
}

// probeVFAT identifies FAT12/16/32 filesystems.
func probeVFAT(g region) (*Content, error) {
	bs, err := g.read(0, 512)
	if err != nil {
		return nil, err
	}
	geo, ok := fatValid(g, bs)
	if !ok {
		return nil, nil
	}
	c := &Content{Type: "vfat"}
	var volLabel, serno []byte
	ss := geo.sectorSize
	if le16(bs, 0x16) != 0 {
		rootStart := (geo.reserved + geo.fatSize) * ss
		volLabel, _ = fatLabel(g, uint64(rootStart), uint32(le16(bs, 0x11)))
		if bs[0x26] == 0x28 || bs[0x26] == 0x29 {
			serno = bs[0x27:0x2b]
		}
		switch {
		case geo.clusterCount < fat12Max:
			c.Version = "FAT12"
		case geo.clusterCount < fat16Max:
			c.Version = "FAT16"
		}
	} else if le32(bs, 0x24) != 0 {
		clusterSize := uint32(bs[0x0d])
		bufSize := clusterSize * ss
		startData := geo.reserved + geo.fatSize
		entries := uint32((uint64(le32(bs, 0x24)) * uint64(ss)) / 4)
		next := le32(bs, 0x2c)
		for loops := 99; next != 0 && next < entries && loops > 0; loops-- {
			nextOff := uint64(startData+(next-2)*clusterSize) * uint64(ss)
			if l, ok := fatLabel(g, nextOff, bufSize/32); ok {
				volLabel = l
				break
			}
			fatEntryOff := uint64(geo.reserved)*uint64(ss) + uint64(next)*4
			if fatEntryOff+uint64(bufSize) > uint64(g.size) {
				break
			}
			b, err := g.read(int64(fatEntryOff), 4)
			if err != nil {
				break
			}
			next = le32(b, 0) & 0x0fffffff
		}
		c.Version = "FAT32"
		serno = bs[0x43:0x47]
		if fsinfo := uint64(le16(bs, 0x30)); fsinfo != 0 {
			fi, err := g.read(int64(fsinfo*uint64(ss)), 512)
			if err != nil {
				return nil, err
			}
			s1, s2 := string(fi[0:4]), string(fi[484:488])
			if s1 != "RRaA" && s1 != "RRdA" && s1 != "\x00\x00\x00\x00" {
				return nil, nil
			}
			if s2 != "rrAa" && s2 != "\x00\x00\x00\x00" {
				return nil, nil
			}
		}
	}
	if volLabel != nil {
		c.Label = label(volLabel)
	}
	if serno != nil && !allZero(serno) {
		c.UUID = fmt.Sprintf("%02X%02X-%02X%02X", serno[3], serno[2], serno[1], serno[0])
	}
	c.BlockSize = int64(ss)
	c.Size = clampSize(uint64(geo.sectCount), uint64(ss))
	return c, nil
}

// isVFAT reports whether the region starts with a valid FAT boot sector
// (blkid_probe_is_vfat), used to tell a FAT boot sector from an MBR.
func isVFAT(g region, bs []byte) bool {
	_, ok := fatValid(g, bs)
	return ok
}

// probeExFAT identifies exFAT and reads its label from the root directory.
func probeExFAT(g region) (*Content, error) {
	sb, err := g.read(0, 512)
	if err != nil {
		return nil, err
	}
	if !hasMagic(sb, 3, "EXFAT   ") {
		return nil, nil
	}
	blockBits, bpcBits := uint(sb[108]), uint(sb[109])
	if blockBits+bpcBits >= 32 {
		return nil, nil
	}
	clusterSize := uint64(1) << (blockBits + bpcBits)
	clusterStart := uint64(le32(sb, 88))
	fatStart := uint64(le32(sb, 80))
	clusterOff := func(cl uint32) uint64 {
		return (clusterStart + uint64(cl-2)<<bpcBits) << blockBits
	}
	c := &Content{Type: "exfat"}
	cl := le32(sb, 96)
	off := clusterOff(cl)
	for i := 0; i < 10000; i++ {
		e, err := g.read(int64(off), 32)
		if err != nil || off > uint64(g.size) {
			break
		}
		if e[0] == 0 {
			break
		}
		if e[0] == 0x83 {
			n := int(e[1]) * 2
			if n > 22 {
				n = 22
			}
			c.Label = utf8Label(encUTF16LE, e[2:2+n])
			break
		}
		off += 32
		if off%clusterSize == 0 {
			fe, err := g.read(int64(fatStart<<blockBits+uint64(cl)*4), 4)
			if err != nil {
				break
			}
			cl = le32(fe, 0)
			if cl < 2 || cl > 0xffffff6 {
				break
			}
			off = clusterOff(cl)
		}
	}
	if serial := sb[100:104]; !allZero(serial) {
		c.UUID = fmt.Sprintf("%02X%02X-%02X%02X", serial[3], serial[2], serial[1], serial[0])
	}
	c.Version = fmt.Sprintf("%d.%d", sb[105], sb[104])
	c.BlockSize = 1 << blockBits
	c.Size = clampSize(le64(sb, 72), uint64(c.BlockSize))
	return c, nil
}

// ntfsCheck validates an NTFS boot sector and its MFT; with info it also
// returns the volume label and serial.
func probeNTFS(g region) (*Content, error) {
	return ntfsProbe(g, true)
}

func ntfsProbe(g region, info bool) (*Content, error) {
	bs, err := g.read(0, 512)
	if err != nil {
		return nil, err
	}
	if !hasMagic(bs, 3, "NTFS    ") {
		return nil, nil
	}
	ss := uint64(le16(bs, 11))
	if ss < 256 || ss > 4096 {
		return nil, nil
	}
	var spc uint64
	switch s := bs[13]; s {
	case 1, 2, 4, 8, 16, 32, 64, 128:
		spc = uint64(s)
	default:
		if s < 240 || s > 249 {
			return nil, nil
		}
		spc = 1 << (256 - uint(s))
	}
	if ss*spc > 2<<20 {
		return nil, nil
	}
	if le16(bs, 14) != 0 || le16(bs, 17) != 0 || le16(bs, 19) != 0 || le16(bs, 22) != 0 || le32(bs, 32) != 0 || bs[16] != 0 {
		return nil, nil
	}
	cpmr := int8(bs[64])
	if u := uint8(cpmr); u < 0xe1 || u > 0xf7 {
		switch cpmr {
		case 1, 2, 4, 8, 16, 32, 64:
		default:
			return nil, nil
		}
	}
	var recSize uint64
	if cpmr > 0 {
		recSize = uint64(cpmr) * spc * ss
	} else {
		recSize = 1 << uint(-int(cpmr))
	}
	nrClusters := le64(bs, 40) / spc
	mft, mirr := le64(bs, 48), le64(bs, 56)
	if mft > nrClusters || mirr > nrClusters || recSize < 4 || recSize > maxRead {
		return nil, nil
	}
	off := mft * ss * spc
	rec, err := g.read(int64(off), int(recSize))
	if err != nil || string(rec[:4]) != "FILE" {
		return nil, nil
	}
	off += 3 * recSize
	rec, err = g.read(int64(off), int(recSize))
	if err != nil || string(rec[:4]) != "FILE" {
		return nil, nil
	}
	c := &Content{Type: "ntfs"}
	if !info {
		return c, nil
	}
	attrOff := uint64(le16(rec, 20))
	for attrOff+22 <= recSize && attrOff <= uint64(le32(rec, 28)) {
		a := int(attrOff)
		alen := uint64(le32(rec, a+4))
		if alen == 0 {
			break
		}
		typ := le32(rec, a)
		if typ == 0xffffffff {
			break
		}
		if typ == 0x60 {
			valOff, valLen := uint64(le16(rec, a+20)), uint64(le32(rec, a+16))
			if attrOff+valOff+valLen <= recSize {
				s := attrOff + valOff
				c.Label = utf8Label(encUTF16LE, rec[s:s+valLen])
			}
			break
		}
		attrOff += alen
	}
	c.BlockSize = int64(ss)
	if serial := le64(bs, 72); serial != 0 {
		c.UUID = fmt.Sprintf("%016X", serial)
	}
	c.Size = clampSize(le64(bs, 40), ss)
	return c, nil
}

// isNTFS reports whether the region holds NTFS (blkid_probe_is_ntfs).
func isNTFS(g region) bool {
	c, _ := ntfsProbe(g, false)
	return c != nil
}
