package probe

import "crypto/md5"

// hfsUUID derives the UUID blkid reports for HFS/HFS+ from the 8-byte
// Finder info volume id (an MD5 name-based UUID, as Apple does).
func hfsUUID(id []byte) string {
	if allZero(id) {
		return ""
	}
	h := md5.New()
	h.Write([]byte{0xb3, 0xe2, 0x0f, 0x39, 0xf2, 0x92, 0x11, 0xd6, 0x97, 0xa4, 0x00, 0x30, 0x65, 0x43, 0xec, 0xac})
	h.Write(id)
	u := h.Sum(nil)
	u[6] = 0x30 | u[6]&0x0f
	u[8] = 0x80 | u[8]&0x3f
	return uuidString(u)
}

// probeHFS identifies classic HFS (not an HFS wrapper around HFS+).
func probeHFS(g region) (*Content, error) {
	mdb, err := g.read(1024, 162)
	if err != nil {
		return nil, err
	}
	if !hasMagic(mdb, 0, "BD") {
		return nil, nil
	}
	if hasMagic(mdb, 124, "H+") || hasMagic(mdb, 124, "HX") {
		return nil, nil
	}
	alBlk := be32(mdb, 20)
	if alBlk == 0 || alBlk&511 != 0 {
		return nil, nil
	}
	n := int(mdb[36])
	if n > 27 {
		n = 27
	}
	return &Content{
		Type:  "hfs",
		UUID:  hfsUUID(mdb[116:124]),
		Label: label(mdb[37 : 37+n]),
		Size:  clampSize(uint64(be16(mdb, 18)), uint64(alBlk)),
	}, nil
}

// probeHFSPlus identifies HFS+ and HFSX, also inside an HFS wrapper, and
// reads the volume name from the catalog's first leaf record as blkid does.
func probeHFSPlus(g region) (*Content, error) {
	sbd, err := g.read(1024, 512)
	if err != nil {
		return nil, err
	}
	var off uint64
	vh := sbd
	switch {
	case hasMagic(sbd, 0, "BD"):
		if !hasMagic(sbd, 124, "H+") && !hasMagic(sbd, 124, "HX") {
			return nil, nil
		}
		alBlk := uint64(be32(sbd, 20))
		off = uint64(be16(sbd, 28))*512 + uint64(be16(sbd, 126))*alBlk
		vh, err = g.read(int64(off+1024), 512)
		if err != nil {
			return nil, err
		}
	case hasMagic(sbd, 0, "H+"), hasMagic(sbd, 0, "HX"):
	default:
		return nil, nil
	}
	if !hasMagic(vh, 0, "H+") && !hasMagic(vh, 0, "HX") {
		return nil, nil
	}
	c := &Content{Type: "hfsplus", UUID: hfsUUID(vh[104:112])}
	bsz := uint64(be32(vh, 40))
	if bsz < 512 {
		return nil, nil
	}
	c.BlockSize = int64(bsz)
	c.Size = clampSize(uint64(be32(vh, 44)), bsz)

	const extents = 288 // cat_file.extents
	catBlock := uint64(be32(vh, extents))
	hdr, err := g.read(int64(off+catBlock*bsz), 0x2000)
	if err != nil {
		return c, nil
	}
	leafHead := be32(hdr, 14+10)
	nodeSize := uint32(be16(hdr, 14+18))
	leafCount := be32(hdr, 14+6)
	if nodeSize < 14+518 || leafCount == 0 {
		return c, nil
	}
	leafBlock := (leafHead * nodeSize) / uint32(bsz)
	var extStart uint32
	ext := 0
	for ; ext < 8; ext++ {
		extStart = be32(vh, extents+ext*8)
		count := be32(vh, extents+ext*8+4)
		if count == 0 {
			return c, nil
		}
		if leafBlock < count {
			break
		}
		leafBlock -= count
	}
	if ext == 8 {
		return c, nil
	}
	leafOff := (uint64(extStart) + uint64(leafBlock)) * bsz
	node, err := g.read(int64(off+leafOff), int(nodeSize))
	if err != nil {
		return c, nil
	}
	if be16(node, 10) == 0 || node[8] != 0xff {
		return c, nil
	}
	ulen := int(be16(node, 20))
	if be32(node, 16) != 1 || ulen > 255 {
		return c, nil
	}
	c.Label = utf8Label(encUTF16BE, node[22:22+ulen*2])
	return c, nil
}

// probeAPFS identifies an APFS container superblock.
func probeAPFS(g region) (*Content, error) {
	sb, err := g.read(0, 88)
	if err != nil {
		return nil, err
	}
	if !hasMagic(sb, 32, "NXSB") {
		return nil, nil
	}
	if le16(sb, 24) != 1 || le16(sb, 28) != 0 || le16(sb, 30) != 0 || le32(sb, 36) != 4096 {
		return nil, nil
	}
	return &Content{
		Type:      "apfs",
		UUID:      uuidString(sb[72:88]),
		BlockSize: 4096,
		Size:      clampSize(le64(sb, 40), 4096),
	}, nil
}
