package probe

import (
	"bytes"
	"context"
	"encoding/binary"
	"testing"
)

func TestParseLVMMetadata(t *testing.T) {
	text := `# comment
vg0 {
id = "AbCdEf-1234-5678-9012-3456-7890-abcdef"
seqno = 7
status = ["RESIZEABLE", "READ", "WRITE"]
extent_size = 8192   # 4 MiB
physical_volumes {
pv0 {
id = "PVPVPV-1111-2222-3333-4444-5555-666666"
device = "/dev/sd\"x\""
dev_size = 204800
pe_start = 2048
pe_count = 24
}
}
logical_volumes {
root {
id = "LVLVLV-1111-2222-3333-4444-5555-666666"
status = ["READ", "WRITE", "VISIBLE"]
segment_count = 2
segment1 {
start_extent = 0
extent_count = 5
type = "striped"
stripe_count = 1
stripes = [
"pv0", 0
]
}
segment2 {
start_extent = 5
extent_count = 3
type = "striped"
stripe_count = 1
stripes = [ "pv0", 10 ]
}
}
pool_tdata {
id = "x"
status = ["READ"]
segment1 { start_extent = 0
extent_count = 1 type = "striped" stripes = ["pv0", 20] }
}
}
}
contents = "Text Format Volume Group"
version = 1
`
	info := &LVMInfo{PVUUID: "PVPVPV-1111-2222-3333-4444-5555-666666"}
	if err := parseLVMMetadata(text, info); err != nil {
		t.Fatal(err)
	}
	if info.VGName != "vg0" || info.SeqNo != 7 || info.ExtentSize != 4<<20 || info.PVName != "pv0" {
		t.Fatalf("vg = %+v", info)
	}
	if len(info.PVs) != 1 || info.PVs[0].Device != `/dev/sd"x"` || info.PVs[0].PEStart != 1<<20 || info.PVs[0].Size != 100<<20 {
		t.Errorf("pvs = %+v", info.PVs)
	}
	if len(info.LVs) != 2 {
		t.Fatalf("lvs = %+v", info.LVs)
	}
	root := info.LVs[0]
	if root.Name != "root" || root.Size != 8*4<<20 || !root.Visible || len(root.Segments) != 2 ||
		root.Segments[1].Stripes[0] != (LVMStripe{PV: "pv0", StartPE: 10}) {
		t.Errorf("root = %+v", root)
	}
	if info.LVs[1].Visible || info.LVs[1].Size != 4<<20 {
		t.Errorf("hidden lv = %+v", info.LVs[1])
	}

	for _, bad := range []string{
		"", "vg {", "vg { a = }", "}", "vg { a = [ 1, 2 }", `vg { a = "unterminated }`,
		"a" + string(bytes.Repeat([]byte(" { a"), 100)),
	} {
		if err := parseLVMMetadata(bad, &LVMInfo{}); err == nil {
			t.Errorf("parseLVMMetadata(%q) succeeded", bad)
		}
	}
}

func TestSplitIndex(t *testing.T) {
	for _, tc := range []struct {
		in   string
		path string
		idx  int
	}{
		{"disk.img", "disk.img", -1},
		{"disk.img@2", "disk.img", 2},
		{"disk.img@0", "disk.img", 0},
		{"/dev/sda@12", "/dev/sda", 12},
		{"me@host.img", "me@host.img", -1},
		{"disk.img@", "disk.img@", -1},
		{"@3", "@3", -1},
		{"disk.img@+3", "disk.img@+3", -1},
		{"disk.img@99999", "disk.img@99999", -1},
	} {
		p, i := SplitIndex(tc.in)
		if p != tc.path || i != tc.idx {
			t.Errorf("SplitIndex(%q) = %q, %d; want %q, %d", tc.in, p, i, tc.path, tc.idx)
		}
	}
}

func TestTextHelpers(t *testing.T) {
	utf16be := func(s string) []byte {
		var b []byte
		for _, r := range s {
			b = append(b, byte(r>>8), byte(r))
		}
		return b
	}
	pad := func(b []byte, n int, c byte) []byte {
		for len(b) < n {
			b = append(b, c)
		}
		return b
	}
	for _, tc := range []struct {
		name        string
		joliet, pvd []byte
		want        string
	}{
		// Joliet keeps 16 characters; the PVD has all 32 in upper case.
		{"prefix", pad(utf16be("Debian 12.5.0 am"), 32, 0), pad([]byte("DEBIAN_12_5_0_AMD64_NETINST"), 32, ' '), "Debian 12.5.0 amD64_NETINST"},
		{"mismatch", pad(utf16be("Other"), 32, 0), pad([]byte("DIFFERENT"), 32, ' '), ""},
	} {
		got := utf8Label(encUTF16BE, mergeUTF16BEASCII(tc.joliet, tc.pvd))
		if got != tc.want {
			t.Errorf("%s: merged label %q, want %q", tc.name, got, tc.want)
		}
	}
	if got := decode(encUTF16LE, []byte{0x3d, 0xd8, 0x00, 0xde, 'a', 0, 0, 0, 'b', 0}); got != "\U0001F600a" {
		t.Errorf("surrogate pair decoded as %q", got)
	}
	if got := label([]byte("name  \t\x00junk")); got != "name" {
		t.Errorf("label = %q", got)
	}
	dstr := func(s string) []byte {
		d := make([]byte, 128)
		d[0] = 8
		copy(d[1:], s)
		d[127] = byte(len(s) + 1)
		return d
	}
	for in, want := range map[string]string{
		"5f3a9c21ABCDEF01rest": "5f3a9c21abcdef01",
		"5f3a9c21 LinuxUDF":    "5f3a9c21204c696e",
		"Volume Set":           "566f6c756d652053",
	} {
		if got, ok := udfUUID(dstr(in)); !ok || got != want {
			t.Errorf("udfUUID(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestHostilePartitionTables(t *testing.T) {
	probe := func(d []byte) *Result {
		t.Helper()
		res, err := Probe(context.Background(), bytes.NewReader(d), int64(len(d)))
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	gpt := buildGPT(128, [][2]uint64{{34, 60}, {61, 90}})
	res := probe(gpt)
	if res.Table == nil || res.Table.Type != "gpt" || len(res.Partitions) != 2 ||
		res.Partitions[1].Index != 2 || res.Partitions[1].Start != 61*512 || res.Partitions[1].Size != 30*512 ||
		res.Partitions[0].Name != "p0" || res.Partitions[0].TypeName != "Linux filesystem" {
		t.Fatalf("gpt = %+v %+v", res.Table, res.Partitions)
	}

	// An entry array claiming 2^32-1 entries is refused, not read.
	bad := append([]byte(nil), gpt...)
	binary.LittleEndian.PutUint32(bad[512+80:], 0xffffffff)
	h := bad[512 : 512+92]
	binary.LittleEndian.PutUint32(h[16:], 0)
	binary.LittleEndian.PutUint32(h[16:], crc32IEEE(h))
	if res := probe(bad); res.Table == nil || !res.Table.Backup {
		t.Errorf("huge primary entry count: table %+v, want the backup GPT", res.Table)
	}

	// A partition beyond the end of the device is listed (as the table
	// says) but never probed.
	mbr := buildMBR(64, 0, false)
	binary.LittleEndian.PutUint32(mbr[446+16*2+8:], 0xfffffff0)
	binary.LittleEndian.PutUint32(mbr[446+16*2+12:], 0xffff)
	mbr[446+16*2+4] = 0x83
	res = probe(mbr)
	if res.Table == nil || res.Table.Type != "dos" || res.Table.UUID != "deadbeef" {
		t.Fatalf("mbr table = %+v", res.Table)
	}

	// An EBR chain that loops back on itself ends.
	res = probe(buildMBR(64, 3, true))
	logical := 0
	for _, p := range res.Partitions {
		if p.Logical {
			logical++
		}
	}
	if logical != 3 {
		t.Errorf("looping EBR chain gave %d logical partitions, want 3", logical)
	}

	// A boot flag other than 0 or 0x80 means this is no partition table.
	mbr = buildMBR(64, 1, false)
	mbr[446] = 0x12
	if res := probe(mbr); res.Table != nil {
		t.Errorf("bad boot flag: table %+v", res.Table)
	}
}

func TestDetectBoundsReads(t *testing.T) {
	// A region far larger than the data and a tiny read budget: Detect
	// must give up cleanly.
	data := make([]byte, 8192)
	c, err := Detect(bytes.NewReader(data), 0, 1<<60, WithReadBudget(4096))
	if err != nil || c != nil {
		t.Errorf("Detect = %+v, %v", c, err)
	}
	if _, err := Detect(bytes.NewReader(data), -1, 10); err == nil {
		t.Error("negative offset accepted")
	}
}
