package probe

import (
	"bytes"
	"encoding/binary"
	"os"
	"testing"
)

// Formats with no mkfs in Debian 12 (UFS, APFS, ZFS, BitLocker, bcachefs)
// are checked on minimal superblocks written here; where the blkid in
// Debian knows the format, it stays the oracle.

func writeImage(t *testing.T, size int64, chunks map[int64][]byte) string {
	t.Helper()
	img := sparseFile(t, "crafted.img", size)
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	for off, b := range chunks {
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return img
}

func ufs2Superblock() []byte {
	sb := make([]byte, 1376)
	le := binary.LittleEndian
	le.PutUint32(sb[52:], 4096)         // fs_fsize
	le.PutUint32(sb[144:], 0x5f3c2a10)  // fs_id[0]
	le.PutUint32(sb[148:], 0x0badcafe)  // fs_id[1]
	copy(sb[680:], "freebsd-root")      // fs_volname
	le.PutUint64(sb[1080:], 8192)       // fs_size (frags)
	le.PutUint32(sb[1372:], 0x19540119) // UFS2 magic
	return sb
}

func apfsSuperblock() []byte {
	sb := make([]byte, 4096)
	le := binary.LittleEndian
	le.PutUint16(sb[24:], 1) // NX superblock object type
	copy(sb[32:], "NXSB")
	le.PutUint32(sb[36:], 4096)
	le.PutUint64(sb[40:], 4096)
	copy(sb[72:88], []byte{0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 0x47, 0x18, 0x89, 0x9a, 0xab, 0xbc, 0xcd, 0xde, 0xef, 0xf0})
	return sb
}

func bitlockerWin7() (boot, fve []byte) {
	boot = make([]byte, 512)
	copy(boot, "\xeb\x58\x90-FVE-FS-")
	binary.LittleEndian.PutUint64(boot[176:], 0x200000)
	boot[510], boot[511] = 0x55, 0xaa
	fve = make([]byte, 64)
	copy(fve, "-FVE-FS-")
	binary.LittleEndian.PutUint16(fve[10:], 2)
	return boot, fve
}

// xdrPair encodes one nvpair the way ZFS writes vdev labels.
func xdrPair(name string, typ uint32, val []byte) []byte {
	var b bytes.Buffer
	pad := func(s []byte) []byte { return append(s, make([]byte, (4-len(s)%4)%4)...) }
	n := pad([]byte(name))
	body := append(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, typ), 1), val...)
	size := 12 + len(n) + len(body)
	binary.Write(&b, binary.BigEndian, uint32(size))
	binary.Write(&b, binary.BigEndian, uint32(size))
	binary.Write(&b, binary.BigEndian, uint32(len(name)))
	b.Write(n)
	b.Write(body)
	return b.Bytes()
}

func zfsImage(t *testing.T, size int64) string {
	label := make([]byte, zfsLabelSize)
	var nv bytes.Buffer
	nv.Write(make([]byte, 12))
	str := func(s string) []byte {
		v := binary.BigEndian.AppendUint32(nil, uint32(len(s)))
		v = append(v, s...)
		return append(v, make([]byte, (4-len(s)%4)%4)...)
	}
	nv.Write(xdrPair("version", 8, binary.BigEndian.AppendUint64(nil, 5000)))
	nv.Write(xdrPair("name", 9, str("tank")))
	nv.Write(xdrPair("pool_guid", 8, binary.BigEndian.AppendUint64(nil, 1234567890123456789)))
	nv.Write(xdrPair("guid", 8, binary.BigEndian.AppendUint64(nil, 987654321)))
	nv.Write(make([]byte, 8))
	copy(label[zfsNVOff:], nv.Bytes())
	for i := 0; i < 4; i++ {
		ub := label[zfsUberOff+i*1024:]
		binary.LittleEndian.PutUint64(ub, zfsUberMagic)
		binary.LittleEndian.PutUint64(ub[8:], 5000)
	}
	return writeImage(t, size, map[int64][]byte{0: label, zfsLabelSize: label})
}

func TestCraftedMatchesBlkid(t *testing.T) {
	needTools(t, "blkid")
	boot, fve := bitlockerWin7()
	cases := []struct {
		name, typ string
		img       func(t *testing.T) string
	}{
		{"ufs2", "ufs", func(t *testing.T) string {
			return writeImage(t, 64*mib, map[int64][]byte{64 << 10: ufs2Superblock()})
		}},
		{"apfs", "apfs", func(t *testing.T) string {
			return writeImage(t, 16*mib, map[int64][]byte{0: apfsSuperblock()})
		}},
		{"bitlocker", "BitLocker", func(t *testing.T) string {
			return writeImage(t, 16*mib, map[int64][]byte{0: boot, 0x200000: fve})
		}},
		{"zfs", "zfs_member", func(t *testing.T) string { return zfsImage(t, 80*mib) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := compareBlkid(t, tc.img(t), 0, 0, tc.typ)
			if tc.typ == "zfs_member" && (c.ZFS == nil || c.ZFS.Pool != "tank" || c.ZFS.VdevGUID != "987654321") {
				t.Errorf("zfs info = %+v", c.ZFS)
			}
		})
	}
}

func TestBcachefs(t *testing.T) {
	sb := make([]byte, 1024)
	le := binary.LittleEndian
	le.PutUint16(sb[16:], 1<<10|7) // version 1.7
	copy(sb[24:], bcachefsMagic)
	user := []byte{0x6b, 0x5e, 0x1c, 0x3d, 0x2f, 0x4a, 0x4b, 0x8c, 0x9d, 0xae, 0xbf, 0xc0, 0xd1, 0xe2, 0xf3, 0x04}
	copy(sb[56:], user)
	copy(sb[72:], "bcachefs-data")
	le.PutUint64(sb[104:], 8) // offset in sectors
	le.PutUint16(sb[120:], 8) // block size in sectors
	sb[122], sb[123] = 1, 2   // dev_idx, nr_devices
	le.PutUint32(sb[124:], 16)
	sb[257] = 7 // sb_max_size_bits
	img := writeImage(t, 8*mib, map[int64][]byte{4096: sb})
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := Detect(f, 0, 8*mib)
	if err != nil || c == nil {
		t.Fatalf("Detect = %v, %v", c, err)
	}
	want := Content{Usage: "filesystem", Type: "bcachefs", Version: "1.7", Label: "bcachefs-data",
		UUID: "6b5e1c3d-2f4a-4b8c-9dae-bfc0d1e2f304", BlockSize: 4096}
	if c.Type != want.Type || c.Version != want.Version || c.Label != want.Label || c.UUID != want.UUID ||
		c.BlockSize != want.BlockSize || c.Bcachefs == nil || c.Bcachefs.NumDevices != 2 || c.Bcachefs.DevIndex != 1 {
		t.Errorf("Detect = %+v", c)
	}
	// A wrong self-offset is not bcachefs.
	le.PutUint64(sb[104:], 9)
	img = writeImage(t, 8*mib, map[int64][]byte{4096: sb})
	f2, _ := os.Open(img)
	defer f2.Close()
	if c, _ := Detect(f2, 0, 8*mib); c != nil {
		t.Errorf("bad offset still detected as %+v", c)
	}
}
