package probe

import "fmt"

// maxPartitions is the most partitions reported from one table; Linux
// itself stops at 256 (DISK_MAX_PARTS).
const maxPartitions = 256

// maxGPTEntries caps the GPT entry array read (bytes).
const maxGPTEntries = 1 << 20

// readPartitions detects a GPT or MBR partition table on dev.
func readPartitions(dev region, cfg config) (*Table, []Partition, int, error) {
	mbr, err := dev.read(0, 512)
	if err != nil {
		if err == errShort {
			return nil, nil, 512, nil
		}
		return nil, nil, 512, err
	}
	if !hasMagic(mbr, 510, "\x55\xaa") {
		return nil, nil, 512, nil
	}
	hasEE, others := false, false
	for i := 0; i < 4; i++ {
		e := mbr[446+i*16 : 462+i*16]
		if e[4] == 0xEE {
			hasEE = true
		} else if e[4] != 0 && le32(e, 12) != 0 {
			others = true
		}
	}
	if hasEE {
		sizes := []int{512, 4096}
		if cfg.sectorSize == 512 || cfg.sectorSize == 4096 {
			sizes = []int{cfg.sectorSize}
		}
		for _, ssz := range sizes {
			tab, parts, err := readGPT(dev, ssz)
			if err != nil {
				return nil, nil, ssz, err
			}
			if tab != nil {
				tab.MBR = "protective"
				if others {
					tab.MBR = "hybrid"
				}
				return tab, parts, ssz, nil
			}
		}
		// A protective MBR without a readable GPT: blkid reports nothing.
		return nil, nil, 512, nil
	}
	ssz := 512
	if cfg.sectorSize == 4096 {
		ssz = 4096
	}
	tab, parts, err := readMBR(dev, mbr, ssz)
	return tab, parts, ssz, err
}

// readGPT reads the primary GPT, or the backup when the primary is bad.
func readGPT(dev region, ssz int) (*Table, []Partition, error) {
	if dev.size/int64(ssz) < 3 {
		return nil, nil, nil
	}
	lastLBA := uint64(dev.size/int64(ssz)) - 1
	for _, lba := range []uint64{1, lastLBA} {
		tab, parts, err := readGPTAt(dev, ssz, lba, lastLBA)
		if err != nil {
			return nil, nil, err
		}
		if tab != nil {
			tab.Backup = lba != 1
			return tab, parts, nil
		}
	}
	return nil, nil, nil
}

func readGPTAt(dev region, ssz int, lba, lastLBA uint64) (*Table, []Partition, error) {
	h, err := dev.read(int64(lba)*int64(ssz), ssz)
	if err != nil {
		if _, ok := err.(*readError); ok {
			return nil, nil, err
		}
		return nil, nil, nil
	}
	if !hasMagic(h, 0, "EFI PART") {
		return nil, nil, nil
	}
	hsz := int(le32(h, 12))
	if hsz > ssz || hsz < 92 {
		return nil, nil, nil
	}
	hc := append([]byte(nil), h[:hsz]...)
	copy(hc[16:20], []byte{0, 0, 0, 0})
	if crc32IEEE(hc) != le32(h, 16) {
		return nil, nil, nil
	}
	if le64(h, 24) != lba {
		return nil, nil, nil
	}
	fu, lu := le64(h, 40), le64(h, 48)
	if lu < fu || fu > lastLBA || lu > lastLBA || (fu < lba && lba < lu) {
		return nil, nil, nil
	}
	n, esz := uint64(le32(h, 80)), uint64(le32(h, 84))
	if n == 0 || esz < 128 || esz > 1024 || esz%8 != 0 || n*esz > maxGPTEntries {
		return nil, nil, nil
	}
	entLBA := le64(h, 72)
	if entLBA > lastLBA {
		return nil, nil, nil
	}
	ents, err := dev.read(int64(entLBA)*int64(ssz), int(n*esz))
	if err != nil {
		if _, ok := err.(*readError); ok {
			return nil, nil, err
		}
		return nil, nil, nil
	}
	if crc32IEEE(ents) != le32(h, 88) {
		return nil, nil, nil
	}
	tab := &Table{Type: "gpt", UUID: guidString(h[56:72]), FirstLBA: fu, LastLBA: lu}
	var parts []Partition
	for i := uint64(0); i < n && len(parts) < maxPartitions; i++ {
		e := ents[i*esz : i*esz+128]
		if allZero(e[0:16]) {
			continue
		}
		start, end := le64(e, 32), le64(e, 40)
		if end < start || start < fu || end > lu {
			continue
		}
		typ := guidString(e[0:16])
		parts = append(parts, Partition{
			Index:      int(i) + 1,
			Start:      int64(start) * int64(ssz),
			Size:       int64(end-start+1) * int64(ssz),
			Type:       typ,
			TypeName:   gptTypeNames[typ],
			UUID:       guidString(e[16:32]),
			Name:       utf8Label(encUTF16LE, e[56:128]),
			Attributes: le64(e, 48),
		})
	}
	return tab, parts, nil
}

func isExtended(t byte) bool { return t == 0x05 || t == 0x0f || t == 0x85 }

// readMBR reads a DOS partition table with its extended partition chain,
// with blkid's checks against FAT/NTFS boot sectors and loops.
func readMBR(dev region, mbr []byte, ssz int) (*Table, []Partition, error) {
	for i := 0; i < 4; i++ {
		if b := mbr[446+i*16]; b != 0 && b != 0x80 {
			return nil, nil, nil
		}
	}
	if isVFAT(dev, mbr) || isNTFS(dev) {
		return nil, nil, nil
	}
	empty := true
	for i := 0; i < 4; i++ {
		if le32(mbr, 446+i*16+12) != 0 {
			empty = false
		}
	}
	if empty {
		if c, _ := probeLVM2(dev); c != nil {
			return nil, nil, nil
		}
	}
	tab := &Table{Type: "dos"}
	id := le32(mbr, 440)
	if id != 0 {
		tab.UUID = fmt.Sprintf("%08x", id)
	}
	sec := int64(ssz)
	partUUID := func(idx int) string {
		if id == 0 {
			return ""
		}
		return fmt.Sprintf("%08x-%02x", id, idx)
	}
	var parts []Partition
	for i := 0; i < 4; i++ {
		e := mbr[446+i*16 : 462+i*16]
		start, size := le32(e, 8), le32(e, 12)
		if size == 0 {
			continue
		}
		t := e[4]
		parts = append(parts, Partition{
			Index:      i + 1,
			Start:      int64(start) * sec,
			Size:       int64(size) * sec,
			Type:       fmt.Sprintf("%02x", t),
			TypeName:   mbrTypeNames[t],
			UUID:       partUUID(i + 1),
			Attributes: uint64(e[0]),
			Extended:   isExtended(t),
		})
	}
	next := 5
	for i := 0; i < 4; i++ {
		e := mbr[446+i*16 : 462+i*16]
		start, size := le32(e, 8), le32(e, 12)
		if size == 0 || !isExtended(e[4]) {
			continue
		}
		logical, err := readEBRChain(dev, sec, start, size, &next, partUUID)
		if err != nil {
			return nil, nil, err
		}
		parts = append(parts, logical...)
	}
	if len(parts) > maxPartitions {
		parts = parts[:maxPartitions]
	}
	return tab, parts, nil
}

// readEBRChain follows the linked list of extended boot records, as
// blkid's parse_dos_extended does (at most 100 links without data).
func readEBRChain(dev region, sec int64, exStart, exSize uint32, next *int, partUUID func(int) string) ([]Partition, error) {
	if exStart == 0 {
		return nil, nil
	}
	var parts []Partition
	seen := map[uint64]bool{}
	cur, curSize := exStart, exSize
	noData := 0
	for {
		noData++
		if noData > 100 || len(parts) >= maxPartitions {
			return parts, nil
		}
		ebr, err := dev.read(int64(cur)*sec, 512)
		if err != nil {
			if _, ok := err.(*readError); ok {
				return nil, err
			}
			return parts, nil
		}
		if !hasMagic(ebr, 510, "\x55\xaa") {
			return parts, nil
		}
		for i := 0; i < 4; i++ {
			e := ebr[446+i*16 : 462+i*16]
			start, size := le32(e, 8), le32(e, 12)
			abs := uint64(cur) + uint64(start)
			if size == 0 || isExtended(e[4]) {
				continue
			}
			if i >= 2 {
				if uint64(start)+uint64(size) > uint64(curSize) ||
					abs < uint64(exStart) ||
					abs+uint64(size) > uint64(exStart)+uint64(exSize) {
					continue
				}
			}
			if seen[abs] {
				continue
			}
			seen[abs] = true
			t := e[4]
			parts = append(parts, Partition{
				Index:      *next,
				Start:      int64(abs) * sec,
				Size:       int64(size) * sec,
				Type:       fmt.Sprintf("%02x", t),
				TypeName:   mbrTypeNames[t],
				UUID:       partUUID(*next),
				Attributes: uint64(e[0]),
				Logical:    true,
			})
			*next++
			noData = 0
		}
		link := -1
		for i := 0; i < 4; i++ {
			e := ebr[446+i*16 : 462+i*16]
			if le32(e, 12) != 0 && isExtended(e[4]) && le32(e, 8) != 0 {
				link = i
				break
			}
		}
		if link < 0 {
			return parts, nil
		}
		e := ebr[446+link*16 : 462+link*16]
		nstart := uint64(exStart) + uint64(le32(e, 8))
		if nstart > 0xffffffff {
			return parts, nil
		}
		cur, curSize = uint32(nstart), le32(e, 12)
	}
}

// gptTypeNames names common GPT partition types (lowercase GUIDs).
var gptTypeNames = map[string]string{
	"c12a7328-f81f-11d2-ba4b-00a0c93ec93b": "EFI System",
	"21686148-6449-6e6f-744e-656564454649": "BIOS boot",
	"0fc63daf-8483-4772-8e79-3d69d8477de4": "Linux filesystem",
	"0657fd6d-a4ab-43c4-84e5-0933c84b4f4f": "Linux swap",
	"e6d6d379-f507-44c2-a23c-238f2a3df928": "Linux LVM",
	"a19d880f-05fc-4d3b-a006-743f0f84911e": "Linux RAID",
	"ca7d7ccb-63ed-4c53-861c-1742536059cc": "Linux LUKS",
	"7ffec5c9-2d00-49b7-8941-3ea10a5586b7": "Linux dm-crypt",
	"933ac7e1-2eb4-4f13-b844-0e14e2aef915": "Linux home",
	"4f68bce3-e8cd-4db1-96e7-fbcaf984b709": "Linux root (x86-64)",
	"44479540-f297-41b2-9af7-d131d5f0458a": "Linux root (x86)",
	"b921b045-1df0-41c3-af44-4c6f280d3fae": "Linux root (ARM-64)",
	"3b8f8425-20e0-4f3b-907f-1a25a76f98e8": "Linux server data",
	"bc13c2ff-59e6-4262-a352-b275fd6f7172": "Linux extended boot",
	"e3c9e316-0b5c-4db8-817d-f92df00215ae": "Microsoft reserved",
	"ebd0a0a2-b9e5-4433-87c0-68b6b72699c7": "Microsoft basic data",
	"de94bba4-06d1-4d40-a16a-bfd50179d6ac": "Windows recovery environment",
	"5808c8aa-7e8f-42e0-85d2-e1e90434cfb3": "Microsoft LDM metadata",
	"af9b60a0-1431-4f62-bc68-3311714a69ad": "Microsoft LDM data",
	"48465300-0000-11aa-aa11-00306543ecac": "Apple HFS/HFS+",
	"7c3457ef-0000-11aa-aa11-00306543ecac": "Apple APFS",
	"426f6f74-0000-11aa-aa11-00306543ecac": "Apple boot",
	"516e7cb6-6ecf-11d6-8ff8-00022d09712b": "FreeBSD UFS",
	"516e7cb5-6ecf-11d6-8ff8-00022d09712b": "FreeBSD swap",
	"516e7cba-6ecf-11d6-8ff8-00022d09712b": "FreeBSD ZFS",
	"6a898cc3-1dd2-11b2-99a6-080020736631": "Solaris /usr & Apple ZFS",
	"8da63339-0007-60c0-c436-083ac8230908": "Linux reserved",
}

// mbrTypeNames names common MBR system ids.
var mbrTypeNames = map[byte]string{
	0x01: "FAT12",
	0x04: "FAT16 <32M",
	0x05: "Extended",
	0x06: "FAT16",
	0x07: "HPFS/NTFS/exFAT",
	0x0b: "W95 FAT32",
	0x0c: "W95 FAT32 (LBA)",
	0x0e: "W95 FAT16 (LBA)",
	0x0f: "W95 Ext'd (LBA)",
	0x11: "Hidden FAT12",
	0x82: "Linux swap / Solaris",
	0x83: "Linux",
	0x85: "Linux extended",
	0x8e: "Linux LVM",
	0xa5: "FreeBSD",
	0xa6: "OpenBSD",
	0xa8: "Darwin UFS",
	0xa9: "NetBSD",
	0xaf: "HFS / HFS+",
	0xee: "GPT",
	0xef: "EFI (FAT-12/16/32)",
	0xfd: "Linux raid autodetect",
}
