package probe

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// TestLVMMatchesLVMTools makes a PV with two LVs using the real LVM tools
// on a loop device (the kernel needs no device-mapper for that when the
// LVs stay inactive) and compares with blkid and `lvs`.
func TestLVMMatchesLVMTools(t *testing.T) {
	needTools(t, "blkid", "losetup", "pvcreate", "vgcreate", "lvcreate", "lvs", "vgchange")
	img := sparseFile(t, "pv.img", 64*mib)
	out, err := exec.Command("losetup", "-f", "--show", img).CombinedOutput()
	if err != nil {
		t.Skipf("losetup (a loop device is needed for pvcreate) failed: %v: %s", err, out)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	vg := fmt.Sprintf("qmtest%d", rand.Intn(1_000_000))
	run(t, "pvcreate", "-q", "-y", loop)
	run(t, "vgcreate", "-q", vg, loop)
	t.Cleanup(func() { exec.Command("vgchange", "-q", "-an", vg).Run() })
	run(t, "lvcreate", "-q", "--driverloaded", "n", "-an", "-Zn", "-y", "-L", "8M", "-n", "data", vg)
	run(t, "lvcreate", "-q", "--driverloaded", "n", "-an", "-Zn", "-y", "-L", "12M", "-n", "home", vg)
	var lvs struct {
		Report []struct {
			LV []struct {
				Name string `json:"lv_name"`
				Size string `json:"lv_size"`
				UUID string `json:"lv_uuid"`
				VG   string `json:"vg_name"`
				VGID string `json:"vg_uuid"`
			} `json:"lv"`
		} `json:"report"`
	}
	raw := run(t, "lvs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", "lv_name,lv_size,lv_uuid,vg_name,vg_uuid", vg)
	if err := json.Unmarshal([]byte(raw[strings.Index(raw, "{"):]), &lvs); err != nil {
		t.Fatalf("lvs output: %v\n%s", err, raw)
	}
	run(t, "vgchange", "-q", "-an", vg)
	if err := exec.Command("losetup", "-d", loop).Run(); err != nil {
		t.Fatal(err)
	}

	c := compareBlkid(t, img, 0, 0, "LVM2_member")
	if c == nil || c.LVM == nil {
		t.Fatal("no LVM info")
	}
	if c.LVM.VGName != vg || c.LVM.PVName != "pv0" || len(c.LVM.PVs) != 1 || c.LVM.ExtentSize != 4*mib {
		t.Errorf("lvm info = %+v", c.LVM)
	}
	want := lvs.Report[0].LV
	if len(c.LVM.LVs) != len(want) {
		t.Fatalf("LVs = %+v, lvs says %+v", c.LVM.LVs, want)
	}
	for i, w := range want {
		got := c.LVM.LVs[i]
		size, _ := strconv.ParseInt(w.Size, 10, 64)
		if got.Name != w.Name || got.Size != size || got.UUID != w.UUID || !got.Visible {
			t.Errorf("LV %d = %+v, lvs says %+v", i, got, w)
		}
		if c.LVM.VGUUID != w.VGID {
			t.Errorf("VG uuid %q, lvs says %q", c.LVM.VGUUID, w.VGID)
		}
	}
}

// mdSuperblock1 builds a real md 1.x superblock the way mdadm lays it out
// (mdadm --create needs the md kernel driver, which hosts may not have).
func mdSuperblock1(off int64, level int32, disks, role int, name string, setUUID, devUUID [16]byte, dataOff, dataSize uint64) []byte {
	sb := make([]byte, 1024)
	le := binary.LittleEndian
	le.PutUint32(sb[0:], mdMagic)
	le.PutUint32(sb[4:], 1)
	copy(sb[16:32], setUUID[:])
	copy(sb[32:64], name)
	le.PutUint32(sb[72:], uint32(level))
	le.PutUint64(sb[80:], dataSize)
	le.PutUint32(sb[88:], 1024) // chunk, sectors
	le.PutUint32(sb[92:], uint32(disks))
	le.PutUint64(sb[128:], dataOff)
	le.PutUint64(sb[136:], dataSize)
	le.PutUint64(sb[144:], uint64(off)>>9)
	le.PutUint32(sb[160:], uint32(role))
	copy(sb[168:184], devUUID[:])
	le.PutUint64(sb[200:], 7)
	le.PutUint32(sb[220:], uint32(disks))
	for i := 0; i < disks; i++ {
		le.PutUint16(sb[256+2*i:], uint16(i))
	}
	// sb_csum over 256 + 2*max_dev bytes, as mdadm's calc_sb_1_csum.
	var sum uint64
	n := 256 + 2*disks
	for i := 0; i+4 <= n; i += 4 {
		if i == 216 {
			continue
		}
		sum += uint64(le.Uint32(sb[i:]))
	}
	le.PutUint32(sb[216:], uint32(sum&0xffffffff)+uint32(sum>>32))
	return sb
}

// TestMDMatchesBlkidAndMdadm writes md superblocks (1.2, 1.0, 0.90) and
// checks the result against blkid and `mdadm --examine`.
func TestMDMatchesBlkidAndMdadm(t *testing.T) {
	needTools(t, "blkid")
	setUUID := [16]byte{0x3f, 0x1e, 0x2d, 0x4c, 0x5b, 0x6a, 0x79, 0x88, 0x97, 0xa6, 0xb5, 0xc4, 0xd3, 0xe2, 0xf1, 0x01}
	devUUID := [16]byte{0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x10}
	const size = 32 * mib
	cases := []struct {
		name, meta string
		off        int64
		level      int32
		disks      int
		role       int
	}{
		{"1.2-raid1", "1.2", 4096, 1, 2, 1},
		{"1.0-raid5", "1.0", size&^4095 - 8192, 5, 3, 2},
		{"1.1-raid0", "1.1", 0, 0, 2, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			img := sparseFile(t, "md.img", size)
			sb := mdSuperblock1(tc.off, tc.level, tc.disks, tc.role, "host:array0", setUUID, devUUID, 2048, 60000)
			f, err := os.OpenFile(img, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt(sb, tc.off)
			f.Close()
			c := compareBlkid(t, img, 0, 0, "linux_raid_member")
			if c == nil || c.MD == nil {
				t.Fatal("no md info")
			}
			md := c.MD
			if md.Metadata != tc.meta || md.Name != "host:array0" || md.RaidDisks != tc.disks || md.Role != tc.role ||
				md.DataOffset != 2048*512 || md.DataSize != 60000*512 || md.Level != mdLevel(tc.level) {
				t.Errorf("md info = %+v", md)
			}
			if _, err := exec.LookPath("mdadm"); err != nil {
				return
			}
			ex := run(t, "mdadm", "--examine", img)
			for _, want := range []string{
				"Version : " + tc.meta,
				"Array UUID : " + mdadmUUID(setUUID),
				"Name : host:array0",
				"Raid Level : " + md.Level,
				"Raid Devices : " + strconv.Itoa(tc.disks),
				fmt.Sprintf("Device Role : Active device %d", tc.role),
				fmt.Sprintf("Data Offset : %d sectors", md.DataOffset/512),
			} {
				if !strings.Contains(ex, want) {
					t.Errorf("mdadm --examine lacks %q:\n%s", want, ex)
				}
			}
		})
	}
	t.Run("0.90", func(t *testing.T) {
		img := sparseFile(t, "md090.img", size)
		sb := make([]byte, 4096)
		le := binary.LittleEndian
		w := func(i int, v uint32) { le.PutUint32(sb[i*4:], v) }
		w(0, mdMagic)
		w(1, 0)
		w(2, 90)
		w(3, 0)
		w(5, 0x01020304)
		w(7, 1)                    // raid1
		w(8, uint32(size/1024-64)) // size in KiB
		w(9, 2)                    // nr_disks
		w(10, 2)                   // raid_disks
		w(13, 0x05060708)          // uuid words
		w(14, 0x090a0b0c)
		w(15, 0x0d0e0f10)
		w(992, 1) // this_disk.number
		w(995, 1) // raid_disk
		w(996, 6) // active|sync
		off := int64(size&^(0x10000-1) - 0x10000)
		f, _ := os.OpenFile(img, os.O_RDWR, 0)
		f.WriteAt(sb, off)
		f.Close()
		c := compareBlkid(t, img, 0, 0, "linux_raid_member")
		if c == nil || c.MD == nil || c.MD.Metadata != "0.90" || c.MD.Role != 1 || c.MD.Level != "raid1" || c.MD.RaidDisks != 2 {
			t.Errorf("md info = %+v", c.MD)
		}
	})
}

// mdadmUUID formats an array UUID as mdadm prints it.
func mdadmUUID(u [16]byte) string {
	return fmt.Sprintf("%x:%x:%x:%x", u[0:4], u[4:8], u[8:12], u[12:16])
}
