package agent

import "testing"

func TestParseKmsgRecord(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want KmsgRecord
		ok   bool
	}{
		{"3,1234,5678,-;EXT4-fs (vda): VFS: Can't find ext4 filesystem\n",
			KmsgRecord{Facility: 0, Level: 3, Seq: 1234, Micros: 5678, Msg: "EXT4-fs (vda): VFS: Can't find ext4 filesystem"}, true},
		{"6,339,5140900,-,caller=T1;NET: Registered protocol family 10\n SUBSYSTEM=net\n DEVICE=+net:lo\n",
			KmsgRecord{Level: 6, Seq: 339, Micros: 5140900, Msg: "NET: Registered protocol family 10"}, true},
		{"30,77,100,-;systemd[1]: Started foo.\n", KmsgRecord{Facility: 3, Level: 6, Seq: 77, Micros: 100, Msg: "systemd[1]: Started foo."}, true},
		{"4,1,2,c;a;b", KmsgRecord{Level: 4, Seq: 1, Micros: 2, Msg: "a;b"}, true},
		{"no semicolon", KmsgRecord{}, false},
		{"x,1,2,-;msg", KmsgRecord{}, false},
		{"3,1;msg", KmsgRecord{}, false},
	} {
		got, ok := ParseKmsgRecord(tc.in)
		if ok != tc.ok || got != tc.want {
			t.Errorf("ParseKmsgRecord(%q) = %+v %v, want %+v %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestKernelError(t *testing.T) {
	rec := func(s string) KmsgRecord {
		r, ok := ParseKmsgRecord(s)
		if !ok {
			t.Fatalf("bad record %q", s)
		}
		return r
	}
	for _, tc := range []struct {
		name string
		recs []string
		dev  string
		want string
	}{
		{"ext4 names the device", []string{
			"6,10,1,-;virtio_blk virtio1: [vdb] 2048 512-byte logical blocks",
			"3,11,2,-;EXT4-fs (vda): VFS: Can't find ext4 filesystem",
		}, "/dev/vda", "EXT4-fs (vda): VFS: Can't find ext4 filesystem"},
		{"another device's lines are not ours", []string{
			"3,11,2,-;EXT4-fs (loop7): VFS: Can't find ext4 filesystem",
			"3,12,3,-;EXT4-fs (loop1): VFS: Can't find ext4 filesystem",
		}, "/dev/loop1", "EXT4-fs (loop1): VFS: Can't find ext4 filesystem"},
		{"vda does not match vda1", []string{
			"3,11,2,-;XFS (vda1): Invalid superblock magic number",
		}, "vda", "XFS (vda1): Invalid superblock magic number"}, // falls back to err lines
		{"no device named: err and warning lines", []string{
			"6,1,1,-;random info",
			"3,2,2,-;ISOFS: Unable to identify CD-ROM format.",
			"28,3,3,-;systemd-udevd[5]: some warning", // not the kernel
		}, "/dev/vda", "ISOFS: Unable to identify CD-ROM format."},
		{"btrfs style", []string{
			"3,5,5,-;BTRFS error (device vda): open_ctree failed",
			"6,6,6,-;BTRFS info (device vda): using crc32c (crc32c-generic) checksum algorithm",
		}, "/dev/vda", "BTRFS error (device vda): open_ctree failed; BTRFS info (device vda): using crc32c (crc32c-generic) checksum algorithm"},
		{"nothing", []string{"6,1,1,-;hello"}, "/dev/vda", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var recs []KmsgRecord
			for _, s := range tc.recs {
				recs = append(recs, rec(s))
			}
			if got := KernelError(recs, tc.dev); got != tc.want {
				t.Errorf("KernelError = %q, want %q", got, tc.want)
			}
		})
	}
	// Long runs keep the last lines.
	var recs []KmsgRecord
	for i := range 20 {
		recs = append(recs, KmsgRecord{Level: 3, Msg: "EXT4-fs (vda): line " + string(rune('a'+i))})
	}
	if got := KernelError(recs, "vda"); got[:len("EXT4-fs (vda): line o")] != "EXT4-fs (vda): line o" {
		t.Errorf("long run: %q", got)
	}
}
