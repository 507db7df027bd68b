package probe

import "fmt"

// BtrfsInfo describes one device of a btrfs filesystem.
type BtrfsInfo struct {
	// FSID is the filesystem UUID shared by all its devices.
	FSID string `json:"fsid"`
	// DevID is this device's id within the filesystem (1-based).
	DevID uint64 `json:"devid"`
	// DevUUID is this device's UUID (blkid's UUID_SUB).
	DevUUID string `json:"dev_uuid,omitempty"`
	// NumDevices is how many devices the filesystem spans.
	NumDevices uint64 `json:"num_devices"`
	// TotalBytes is the size of the whole filesystem (all devices).
	TotalBytes uint64 `json:"total_bytes"`
}

// BcachefsInfo describes one device of a bcachefs filesystem.
type BcachefsInfo struct {
	DevIndex   int `json:"dev_index"`
	NumDevices int `json:"num_devices"`
}

// ext2/3/4 feature bits, as blkid uses them.
const (
	extCompatHasJournal   = 0x0004
	extIncompatRecover    = 0x0004
	extIncompatJournalDev = 0x0008
	extIncompat64Bit      = 0x0080
	extFlagsTestFS        = 0x0004

	ext2ROCompatSupp  = 0x0001 | 0x0002 | 0x0004
	ext2IncompatSupp  = 0x0002 | 0x0010
	ext3ROCompatSupp  = ext2ROCompatSupp
	ext3IncompatSupp  = 0x0002 | extIncompatRecover | 0x0010
	extSuperblockOff  = 0x400
	extSuperblockRead = 0x200
)

// probeExt identifies ext2, ext3, ext4, ext4dev and an external ext journal
// (jbd), deciding from the feature bits exactly as blkid does.
func probeExt(g region) (*Content, error) {
	sb, err := g.read(extSuperblockOff, extSuperblockRead)
	if err != nil {
		return nil, err
	}
	if !hasMagic(sb, 0x38, "\x53\xef") {
		return nil, nil
	}
	fc, fi, frc := le32(sb, 92), le32(sb, 96), le32(sb, 100)
	flags := le32(sb, 0x160)
	var typ, usage = "", UsageFilesystem
	switch {
	case fi&extIncompatJournalDev != 0:
		typ, usage = "jbd", UsageOther
	case flags&extFlagsTestFS != 0:
		typ = "ext4dev"
	case frc&^ext3ROCompatSupp != 0 || fi&^ext3IncompatSupp != 0:
		typ = "ext4"
	case fc&extCompatHasJournal != 0:
		typ = "ext3"
	case frc&^ext2ROCompatSupp == 0 && fi&^ext2IncompatSupp == 0:
		typ = "ext2"
	default:
		return nil, nil
	}
	c := &Content{Type: typ, Usage: usage}
	if sb[120] != 0 {
		c.Label = label(sb[120:136])
	}
	c.UUID = uuidString(sb[104:120])
	if typ == "jbd" {
		c.UUIDSub = c.UUID // blkid's LOGUUID
	}
	c.Version = fmt.Sprintf("%d.%d", le32(sb, 76), le16(sb, 62))
	if lb := le32(sb, 24); lb < 32 {
		c.BlockSize = 1024 << lb
		blocks := uint64(le32(sb, 4))
		if fi&extIncompat64Bit != 0 {
			blocks |= uint64(le32(sb, 0x150)) << 32
		}
		c.Size = clampSize(blocks, uint64(c.BlockSize))
	}
	return c, nil
}

// clampSize multiplies a count by a unit, saturating instead of overflowing.
func clampSize(n, unit uint64) int64 {
	if unit == 0 || n == 0 {
		return 0
	}
	const max = uint64(1<<63 - 1)
	if n > max/unit {
		return int64(max)
	}
	return int64(n * unit)
}

// probeXFS checks the XFS superblock with blkid's sanity checks.
func probeXFS(g region) (*Content, error) {
	sb, err := g.read(0, 512)
	if err != nil {
		return nil, err
	}
	if !hasMagic(sb, 0, "XFSB") {
		return nil, nil
	}
	blocksize := uint64(be32(sb, 4))
	dblocks := be64(sb, 8)
	rextsize := uint64(be32(sb, 80))
	agblocks := uint64(be32(sb, 84))
	agcount := uint64(be32(sb, 88))
	sectsize := uint64(be16(sb, 102))
	inodesize := uint64(be16(sb, 104))
	blocklog, sectlog, inodelog, inopblog := uint64(sb[120]), uint64(sb[121]), uint64(sb[122]), uint64(sb[123])
	imaxPct := sb[127]
	if agcount == 0 ||
		sectsize < 512 || sectsize > 32768 || sectlog < 9 || sectlog > 15 || sectsize != 1<<sectlog ||
		blocksize < 512 || blocksize > 65536 || blocklog < 9 || blocklog > 16 || blocksize != 1<<blocklog ||
		inodesize < 256 || inodesize > 2048 || inodelog < 8 || inodelog > 11 || inodesize != 1<<inodelog ||
		blocklog-inodelog != inopblog ||
		rextsize*blocksize > 1<<30 || rextsize*blocksize < 4096 ||
		imaxPct > 100 ||
		dblocks == 0 || dblocks > agcount*agblocks || dblocks < (agcount-1)*agblocks+64 {
		return nil, nil
	}
	c := &Content{Type: "xfs"}
	if sb[108] != 0 {
		c.Label = label(sb[108:120])
	}
	c.UUID = uuidString(sb[32:48])
	c.BlockSize = int64(sectsize)
	c.Size = clampSize(dblocks, blocksize)
	return c, nil
}

// probeBtrfs reads the primary btrfs superblock at 64 KiB.
func probeBtrfs(g region) (*Content, error) {
	const off = 64 << 10
	sb, err := g.read(off, 4096)
	if err != nil {
		return nil, err
	}
	if !hasMagic(sb, 0x40, "_BHRfS_M") {
		return nil, nil
	}
	c := &Content{Type: "btrfs", sbOff: off, sbLen: 4096}
	if sb[299] != 0 {
		c.Label = label(sb[299:555])
	}
	c.UUID = uuidString(sb[32:48])
	c.UUIDSub = uuidString(sb[267:283])
	c.BlockSize = int64(le32(sb, 144))
	c.Size = clampSize(le64(sb, 209), 1)
	c.Btrfs = &BtrfsInfo{
		FSID:       c.UUID,
		DevID:      le64(sb, 201),
		DevUUID:    c.UUIDSub,
		NumDevices: le64(sb, 136),
		TotalBytes: le64(sb, 112),
	}
	return c, nil
}

// probeJFS reads the JFS superblock at 32 KiB.
func probeJFS(g region) (*Content, error) {
	sb, err := g.read(32<<10, 184)
	if err != nil {
		return nil, err
	}
	if !hasMagic(sb, 0, "JFS1") {
		return nil, nil
	}
	bsize, l2bsize := le32(sb, 16), le16(sb, 20)
	l2bfactor := le16(sb, 22)
	pbsize, l2pbsize := le32(sb, 24), le16(sb, 28)
	if l2bsize >= 32 || l2pbsize >= 32 || bsize != 1<<l2bsize || pbsize != 1<<l2pbsize ||
		uint16(l2bsize-l2pbsize) != l2bfactor {
		return nil, nil
	}
	c := &Content{Type: "jfs"}
	if sb[152] != 0 {
		c.Label = label(sb[152:168])
	}
	c.UUID = uuidString(sb[136:152])
	c.BlockSize = int64(bsize)
	c.Size = clampSize(le64(sb, 8), uint64(pbsize))
	return c, nil
}

// nilfs2 superblock layout (little endian).
const (
	nilfsSBSize   = 1024
	nilfsSumOff   = 16
	nilfsCRCStart = nilfsSumOff + 4
)

func nilfsValid(sb []byte) bool {
	if sb == nil || le16(sb, 6) != 0x3434 {
		return false
	}
	n := int(le16(sb, 8))
	if n < nilfsCRCStart || n > nilfsSBSize {
		return false
	}
	crc := ulCRC32(le32(sb, 12), sb[:nilfsSumOff])
	crc = ulCRC32(crc, []byte{0, 0, 0, 0})
	crc = ulCRC32(crc, sb[nilfsCRCStart:n])
	return crc == le32(sb, nilfsSumOff)
}

// probeNilfs2 checks both nilfs2 superblocks (at 1 KiB and near the end)
// and uses the newer valid one.
func probeNilfs2(g region) (*Content, error) {
	p, err := g.read(0x400, nilfsSBSize)
	if err != nil {
		return nil, err
	}
	boff := (g.size/512 - 8) * 512
	b, _ := g.read(boff, nilfsSBSize)
	vp, vb := nilfsValid(p), nilfsValid(b)
	if !vp && !vb {
		return nil, nil
	}
	sb, off := p, int64(0x400)
	if vb && (!vp || le64(p, 56) < le64(b, 56)) {
		sb, off = b, boff
	}
	c := &Content{Type: "nilfs2", sbOff: off, sbLen: nilfsSBSize}
	if sb[168] != 0 {
		c.Label = label(sb[168:248])
	}
	c.UUID = uuidString(sb[152:168])
	c.Version = fmt.Sprintf("%d", le32(sb, 0))
	if lb := le32(sb, 20); lb < 32 {
		c.BlockSize = 1024 << lb
	}
	c.Size = clampSize(le64(sb, 32), 1)
	return c, nil
}

// probeReiser checks the reiserfs 3.x superblock at its old (8 KiB) and new
// (64 KiB) places, in blkid's order.
func probeReiser(g region) (*Content, error) {
	type mag struct {
		kb    int64
		sboff int
		magic string
	}
	for _, m := range []mag{
		{8, 0x34, "ReIsErFs"}, {64, 0x34, "ReIsEr2Fs"}, {64, 0x34, "ReIsEr3Fs"},
		{64, 0x34, "ReIsErFs"}, {8, 20, "ReIsErFs"},
	} {
		sb, err := g.read(m.kb<<10, 116)
		if err != nil {
			if err == errShort {
				continue
			}
			return nil, err
		}
		if !hasMagic(sb, m.sboff, m.magic) {
			continue
		}
		bs := uint32(le16(sb, 44))
		if bs>>9 == 0 {
			return nil, nil
		}
		if uint32(m.kb)/(bs>>9) > le32(sb, 12)/2 {
			return nil, nil
		}
		c := &Content{Type: "reiserfs"}
		switch m.magic[6] {
		case '3':
			c.Version = "JR"
		case '2':
			c.Version = "3.6"
		default:
			c.Version = "3.5"
		}
		if m.magic[6] == '2' || m.magic[6] == '3' {
			if sb[100] != 0 {
				c.Label = label(sb[100:116])
			}
			c.UUID = uuidString(sb[84:100])
		}
		c.BlockSize = int64(bs)
		c.Size = clampSize(uint64(le32(sb, 0)), uint64(bs))
		return c, nil
	}
	return nil, nil
}

// probeMinix identifies minix v1, v2 and v3 filesystems.
func probeMinix(g region) (*Content, error) {
	sb, err := g.read(1024, 32)
	if err != nil {
		return nil, err
	}
	// The superblock must carry one of blkid's magic byte pairs.
	found := false
	for _, m := range []string{"\x7f\x13", "\x8f\x13", "\x13\x7f", "\x13\x8f", "\x68\x24", "\x78\x24", "\x24\x68", "\x24\x78"} {
		if hasMagic(sb, 0x10, m) {
			found = true
		}
	}
	if hasMagic(sb, 0x18, "\x5a\x4d") || hasMagic(sb, 0x18, "\x4d\x5a") {
		found = true
	}
	if !found {
		return nil, nil
	}
	version, swap := 0, false
	ver12 := func(m uint16) int {
		switch m {
		case 0x137f, 0x138f:
			return 1
		case 0x2468, 0x2478:
			return 2
		}
		return 0
	}
	if version = ver12(le16(sb, 16)); version == 0 {
		if le16(sb, 24) == 0x4d5a {
			version = 3
		} else if version = ver12(be16(sb, 16)); version != 0 {
			swap = true
		}
	}
	if version == 0 {
		return nil, nil
	}
	u16 := func(off int) uint64 {
		if swap {
			return uint64(be16(sb, off))
		}
		return uint64(le16(sb, off))
	}
	u32 := func(off int) uint64 {
		if swap {
			return uint64(be32(sb, off))
		}
		return uint64(le32(sb, off))
	}
	var zones, ninodes, imaps, zmaps, firstz, zoneSize, blockSize uint64
	switch version {
	case 1, 2:
		state := u16(18)
		if state&3 != state {
			return nil, nil
		}
		if version == 2 {
			zones = u32(20)
		} else {
			zones = u16(2)
		}
		ninodes, imaps, zmaps, firstz = u16(0), u16(4), u16(6), u16(8)
		zoneSize = uint64(le16(sb, 10))
		blockSize = 1024
	case 3:
		zones, ninodes = u32(20), u32(0)
		imaps, zmaps, firstz = u16(6), u16(8), u16(10)
		zoneSize = uint64(le16(sb, 12))
		blockSize = u16(28)
	}
	if zoneSize != 0 || ninodes == 0 || ninodes == 0xffffffff {
		return nil, nil
	}
	if imaps*1024*8 < ninodes+1 || firstz > zones || zmaps*1024*8 < zones-firstz+1 {
		return nil, nil
	}
	ext, err := g.read(0x438, 2)
	if err != nil {
		return nil, err
	}
	if string(ext) == "\x53\xef" {
		return nil, nil
	}
	return &Content{
		Type:      "minix",
		Version:   fmt.Sprintf("%d", version),
		BlockSize: int64(blockSize),
		Size:      clampSize(zones, blockSize),
	}, nil
}

// probeUFS looks for a UFS1/UFS2 superblock at the usual offsets.
func probeUFS(g region) (*Content, error) {
	const magicOff = 1372
	mags := []uint32{0x19540119, 0x00011954, 0x00195612, 0x00095014, 0x00612195, 0x05231994}
	for _, kb := range []int64{0, 8, 64, 256} {
		sb, err := g.read(kb<<10, 1376)
		if err != nil {
			if err == errShort {
				return nil, nil
			}
			return nil, err
		}
		le, be := le32(sb, magicOff), be32(sb, magicOff)
		for _, m := range mags {
			if le != m && be != m {
				continue
			}
			isBE := be == m
			u32 := func(off int) uint32 {
				if isBE {
					return be32(sb, off)
				}
				return le32(sb, off)
			}
			u64 := func(off int) uint64 {
				if isBE {
					return be64(sb, off)
				}
				return le64(sb, off)
			}
			c := &Content{Type: "ufs", sbOff: kb<<10 + magicOff, sbLen: 4}
			fsize := uint64(u32(52))
			if m == 0x19540119 {
				c.Version = "2"
				c.Label = label(sb[680:712])
				c.Size = clampSize(u64(1080), fsize)
			} else {
				c.Version = "1"
				c.Size = clampSize(uint64(u32(36)), fsize)
			}
			if id0, id1 := u32(144), u32(148); id0 != 0 || id1 != 0 {
				c.UUID = fmt.Sprintf("%08x%08x", id0, id1)
			}
			c.BlockSize = int64(fsize)
			return c, nil
		}
	}
	return nil, nil
}

// probeF2FS reads the f2fs superblock at 1 KiB.
func probeF2FS(g region) (*Content, error) {
	sb, err := g.read(1024, 0x7c+1024)
	if err != nil {
		return nil, err
	}
	if le32(sb, 0) != 0xF2F52010 {
		return nil, nil
	}
	maj, min := le16(sb, 4), le16(sb, 6)
	c := &Content{Type: "f2fs"}
	if maj == 1 && min == 0 {
		return c, nil
	}
	if sb[0x7c] != 0 {
		c.Label = utf8Label(encUTF16LE, sb[0x7c:0x7c+1024])
	}
	c.UUID = uuidString(sb[0x6c:0x7c])
	c.Version = fmt.Sprintf("%d.%d", maj, min)
	if lb := le32(sb, 0x10); lb < 32 {
		c.BlockSize = 1 << lb
		c.Size = clampSize(le64(sb, 0x24), uint64(c.BlockSize))
	}
	return c, nil
}

// probeEROFS reads the EROFS superblock at 1 KiB.
func probeEROFS(g region) (*Content, error) {
	sb, err := g.read(1024, 128)
	if err != nil {
		return nil, err
	}
	if le32(sb, 0) != 0xE0F5E1E2 {
		return nil, nil
	}
	c := &Content{Type: "erofs"}
	if sb[64] != 0 {
		c.Label = label(sb[64:80])
	}
	c.UUID = uuidString(sb[48:64])
	if bits := sb[12]; bits < 32 {
		c.BlockSize = 1 << bits
		c.Size = clampSize(uint64(le32(sb, 36)), uint64(c.BlockSize))
	}
	return c, nil
}

// probeSquashfs identifies squashfs (version 4, little endian) and the old
// squashfs3 formats.
func probeSquashfs(g region) (*Content, error) {
	sb, err := g.read(0, 96)
	if err != nil {
		return nil, err
	}
	switch {
	case hasMagic(sb, 0, "hsqs"):
		maj, min := le16(sb, 28), le16(sb, 30)
		if maj >= 4 {
			return &Content{
				Type:    "squashfs",
				Version: fmt.Sprintf("%d.%d", maj, min),
				Size:    clampSize(le64(sb, 40), 1),
			}, nil
		}
		return &Content{Type: "squashfs3", Version: fmt.Sprintf("%d.%d", maj, min), BlockSize: 1024}, nil
	case hasMagic(sb, 0, "sqsh"):
		maj, min := be16(sb, 28), be16(sb, 30)
		if maj > 3 {
			return nil, nil
		}
		return &Content{Type: "squashfs3", Version: fmt.Sprintf("%d.%d", maj, min), BlockSize: 1024}, nil
	}
	return nil, nil
}

// bcachefs superblock.
const (
	bcachefsMagic     = "\xc6\x85\x73\xf6\x66\xce\x90\xa9\xd9\x6a\x60\xcf\x80\x3d\xf7\xef"
	bcachefsFieldsOff = 752
)

// probeBcachefs reads a bcachefs superblock at 4 KiB (or its copies at
// 2 MiB and 1 MiB before the end). The checksum is not verified.
func probeBcachefs(g region) (*Content, error) {
	for _, off := range []int64{4096, 2 << 20, g.size - 1<<20} {
		if off < 0 {
			continue
		}
		sb, err := g.read(off, bcachefsFieldsOff)
		if err != nil {
			if err == errShort {
				continue
			}
			return nil, err
		}
		if !hasMagic(sb, 24, bcachefsMagic) {
			continue
		}
		if le64(sb, 104) != uint64(off/512) {
			continue
		}
		devIdx, nrDev := sb[122], sb[123]
		if nrDev == 0 || devIdx >= nrDev {
			continue
		}
		maxBits := sb[257]
		sbSize := uint64(bcachefsFieldsOff) + uint64(le32(sb, 124))*8
		if maxBits > 16 || sbSize > 512<<maxBits {
			continue
		}
		v := le16(sb, 16)
		c := &Content{
			Type:      "bcachefs",
			UUID:      uuidString(sb[56:72]),
			Label:     label(sb[72:104]),
			Version:   fmt.Sprintf("%d.%d", v>>10, v&0x3ff),
			BlockSize: int64(le16(sb, 120)) * 512,
			Bcachefs:  &BcachefsInfo{DevIndex: int(devIdx), NumDevices: int(nrDev)},
			sbOff:     off,
			sbLen:     int64(sbSize),
		}
		return c, nil
	}
	return nil, nil
}
