package probe

import (
	"encoding/binary"
	"fmt"
)

// MDInfo describes a Linux md RAID member superblock.
type MDInfo struct {
	// Metadata is the superblock format: "0.90", "1.0", "1.1" or "1.2".
	Metadata string `json:"metadata"`
	// ArrayUUID is the array UUID as blkid prints it (also Content.UUID);
	// mdadm shows the same 16 bytes as four colon-separated words.
	ArrayUUID string `json:"array_uuid"`
	// Name is the array name ("host:name" as mdadm writes it), 1.x only.
	Name string `json:"name,omitempty"`
	// Level is the RAID level: "linear", "raid0", "raid1", "raid4",
	// "raid5", "raid6", "raid10", "multipath", "faulty" or a number.
	Level string `json:"level"`
	// Layout is the level-specific layout number.
	Layout uint32 `json:"layout"`
	// ChunkSize in bytes (striped levels).
	ChunkSize int64 `json:"chunk_size,omitempty"`
	// RaidDisks is the number of member devices the array is made of.
	RaidDisks int `json:"raid_disks"`
	// DevNumber is this device's slot in the superblock.
	DevNumber int `json:"dev_number"`
	// Role is this device's role in the array (0-based member index), or
	// -1 for a spare, -2 for a faulty device, -3 when unknown.
	Role int `json:"role"`
	// DeviceUUID is this device's UUID (1.x; blkid's UUID_SUB).
	DeviceUUID string `json:"device_uuid,omitempty"`
	// DataOffset is where the array data starts on this device, in bytes.
	DataOffset int64 `json:"data_offset"`
	// DataSize is the usable size on this device, in bytes (0 if unknown).
	DataSize int64 `json:"data_size,omitempty"`
	// ArraySize is the size of the assembled array in bytes, when the
	// superblock records it.
	ArraySize int64 `json:"array_size,omitempty"`
	// Events is the event counter (the newest member wins on assembly).
	Events uint64 `json:"events"`
}

const mdMagic = 0xa92b4efc

func mdLevel(l int32) string {
	switch l {
	case -1:
		return "linear"
	case -4:
		return "multipath"
	case -5:
		return "faulty"
	case 0, 1, 4, 5, 6, 10:
		return fmt.Sprintf("raid%d", l)
	}
	return fmt.Sprintf("%d", l)
}

// probeMD looks for md superblocks: 0.90 and 1.0 at the end of the device,
// 1.1 at the start and 1.2 at 4 KiB, in blkid's order.
func probeMD(g region) (*Content, error) {
	if g.size > mdReserved {
		off := g.size&^(mdReserved-1) - mdReserved
		if c, err := probeMD0(g, off); c != nil || err != nil {
			return c, err
		}
		off = g.size&^(0x1000-1) - 0x2000
		if c, err := probeMD1(g, off, "1.0"); c != nil || err != nil {
			return c, err
		}
	}
	if c, err := probeMD1(g, 0, "1.1"); c != nil || err != nil {
		return c, err
	}
	return probeMD1(g, 0x1000, "1.2")
}

// probeMD0 reads a 0.90 superblock (4 KiB, either byte order).
func probeMD0(g region, off int64) (*Content, error) {
	sb, err := g.read(off, 4096)
	if err != nil {
		if err == errShort {
			return nil, nil
		}
		return nil, err
	}
	var bo binary.ByteOrder
	switch {
	case binary.LittleEndian.Uint32(sb) == mdMagic:
		bo = binary.LittleEndian
	case binary.BigEndian.Uint32(sb) == mdMagic:
		bo = binary.BigEndian
	default:
		return nil, nil
	}
	w := func(i int) uint32 { return bo.Uint32(sb[i*4:]) }
	ma, mi, pa := w(1), w(2), w(3)
	size := uint64(w(8)) << 10
	if uint64(g.size) < size+mdReserved || uint64(off) < size {
		return nil, nil
	}
	// blkid builds the UUID from the four words byte-swapped from the
	// stored order (little endian: swab32 of the native word).
	var u [16]byte
	words := []int{5, 13, 14, 15}
	for i, wi := range words {
		if i > 0 && mi < 90 {
			break
		}
		copy(u[i*4:], sb[wi*4:wi*4+4])
		if bo == binary.LittleEndian {
			u[i*4], u[i*4+1], u[i*4+2], u[i*4+3] = u[i*4+3], u[i*4+2], u[i*4+1], u[i*4]
		}
	}
	info := &MDInfo{
		Metadata:  "0.90",
		ArrayUUID: uuidString(u[:]),
		Level:     mdLevel(int32(w(7))),
		RaidDisks: int(w(10)),
		Layout:    w(64),
		ChunkSize: int64(w(65)),
		DataSize:  int64(size),
		Events:    uint64(w(39))<<32 | uint64(w(40)),
		Role:      -3,
	}
	if bo == binary.LittleEndian {
		info.Events = uint64(w(40))<<32 | uint64(w(39))
	}
	// this_disk descriptor at word 992: number, major, minor, raid_disk, state.
	info.DevNumber = int(w(992))
	state := w(996)
	switch {
	case state&1 != 0: // MD_DISK_FAULTY
		info.Role = -2
	case state&(1<<1) != 0 || state&(1<<2) != 0: // active or sync
		info.Role = int(w(995))
	default:
		info.Role = -1
	}
	info.ArraySize = mdArraySize(info.Level, info.RaidDisks, int64(size), info.Layout)
	c := &Content{
		Type:    "linux_raid_member",
		Version: fmt.Sprintf("%d.%d.%d", ma, mi, pa),
		UUID:    info.ArrayUUID,
		MD:      info,
		Size:    int64(size),
		sbOff:   off,
		sbLen:   4096,
	}
	return c, nil
}

// mdReserved is the space md 0.90 reserves at the end of a device.
const mdReserved = 0x10000

// mdArraySize computes the array size from the per-device size.
func mdArraySize(level string, disks int, devSize int64, layout uint32) int64 {
	if disks <= 0 || devSize <= 0 {
		return 0
	}
	n := int64(disks)
	switch level {
	case "raid1":
		return devSize
	case "raid0", "linear":
		return devSize * n
	case "raid4", "raid5":
		if n < 2 {
			return 0
		}
		return devSize * (n - 1)
	case "raid6":
		if n < 3 {
			return 0
		}
		return devSize * (n - 2)
	case "raid10":
		copies := int64(layout&0xff) * int64((layout>>8)&0xff)
		if copies <= 0 {
			return 0
		}
		return devSize * n / copies
	}
	return 0
}

// probeMD1 reads a 1.x superblock at off.
func probeMD1(g region, off int64, ver string) (*Content, error) {
	sb, err := g.read(off, 1024)
	if err != nil {
		if err == errShort {
			return nil, nil
		}
		return nil, err
	}
	if le32(sb, 0) != mdMagic || le32(sb, 4) != 1 || le64(sb, 144) != uint64(off)>>9 {
		return nil, nil
	}
	setUUID := uuidString(sb[16:32])
	info := &MDInfo{
		Metadata:   ver,
		ArrayUUID:  setUUID,
		Name:       label(sb[32:64]),
		Level:      mdLevel(int32(le32(sb, 72))),
		Layout:     le32(sb, 76),
		ChunkSize:  int64(le32(sb, 88)) * 512,
		RaidDisks:  int(le32(sb, 92)),
		DataOffset: clampSize(le64(sb, 128), 512),
		DataSize:   clampSize(le64(sb, 136), 512),
		DevNumber:  int(le32(sb, 160)),
		DeviceUUID: uuidString(sb[168:184]),
		Events:     le64(sb, 200),
		Role:       -3,
	}
	if arr := le64(sb, 80); arr != 0 { // size: used size of component devices
		info.ArraySize = mdArraySize(info.Level, info.RaidDisks, clampSize(arr, 512), info.Layout)
	}
	maxDev := le32(sb, 220)
	if dn := uint32(info.DevNumber); dn < maxDev && 256+int(dn)*2+2 <= len(sb) {
		switch r := le16(sb, 256+int(dn)*2); r {
		case 0xffff:
			info.Role = -1
		case 0xfffe:
			info.Role = -2
		default:
			info.Role = int(r)
		}
	}
	c := &Content{
		Type:    "linux_raid_member",
		Version: ver,
		UUID:    setUUID,
		UUIDSub: info.DeviceUUID,
		Label:   info.Name,
		MD:      info,
		Size:    info.DataOffset + info.DataSize,
		sbOff:   off,
		sbLen:   1024,
	}
	return c, nil
}
