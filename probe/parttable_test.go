package probe

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// sfdiskTable is the part of `sfdisk --json` we compare.
type sfdiskTable struct {
	PartitionTable struct {
		Label      string `json:"label"`
		ID         string `json:"id"`
		SectorSize int64  `json:"sectorsize"`
		Partitions []struct {
			Node  string `json:"node"`
			Start int64  `json:"start"`
			Size  int64  `json:"size"`
			Type  string `json:"type"`
			UUID  string `json:"uuid"`
			Name  string `json:"name"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

func sfdiskJSON(t *testing.T, img string) sfdiskTable {
	t.Helper()
	var st sfdiskTable
	if err := json.Unmarshal([]byte(run(t, "sfdisk", "--json", img)), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// writeAt copies the image src into dst at byte offset off.
func writeAt(t *testing.T, dst string, off int64, src string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := io.Copy(io.NewOffsetWriter(out, off), in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func probeFile(t *testing.T, img string) *Result {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	res, err := Probe(context.Background(), f, st.Size())
	if err != nil {
		t.Fatalf("Probe: %v", err)
	}
	return res
}

// comparePartitions checks Probe's table against sfdisk --json and blkid.
func comparePartitions(t *testing.T, img string, res *Result) {
	t.Helper()
	st := sfdiskJSON(t, img)
	pt := st.PartitionTable
	if res.Table == nil || res.Table.Type != pt.Label {
		t.Fatalf("table = %+v, sfdisk says %q", res.Table, pt.Label)
	}
	if len(res.Partitions) != len(pt.Partitions) {
		t.Fatalf("%d partitions, sfdisk lists %d", len(res.Partitions), len(pt.Partitions))
	}
	ss := pt.SectorSize
	for i, sp := range pt.Partitions {
		p := res.Partitions[i]
		idx, _ := strconv.Atoi(strings.TrimPrefix(sp.Node, img))
		if p.Index != idx || p.Start != sp.Start*ss || p.Size != sp.Size*ss {
			t.Errorf("partition %d: index/start/size %d/%d/%d, sfdisk %d/%d/%d",
				i, p.Index, p.Start, p.Size, idx, sp.Start*ss, sp.Size*ss)
		}
		if pt.Label == "dos" {
			want, _ := strconv.ParseUint(sp.Type, 16, 8)
			if p.Type != strconv.FormatUint(want+0x100, 16)[1:] {
				t.Errorf("partition %d: type %q, sfdisk %q", idx, p.Type, sp.Type)
			}
		} else {
			if !strings.EqualFold(p.Type, sp.Type) || !strings.EqualFold(p.UUID, sp.UUID) || p.Name != sp.Name {
				t.Errorf("partition %d: type/uuid/name %q/%q/%q, sfdisk %q/%q/%q",
					idx, p.Type, p.UUID, p.Name, sp.Type, sp.UUID, sp.Name)
			}
		}
	}
	whole := blkidExport(t, img, 0, 0)
	if whole["PTTYPE"] != res.Table.Type || whole["PTUUID"] != res.Table.UUID {
		t.Errorf("table type/uuid %q/%q, blkid %q/%q", res.Table.Type, res.Table.UUID, whole["PTTYPE"], whole["PTUUID"])
	}
}

// mkfsImage makes a filesystem image of size bytes with the given command
// (the image path is appended).
func mkfsImage(t *testing.T, size int64, cmd ...string) string {
	t.Helper()
	img := sparseFile(t, "part.img", size)
	run(t, cmd[0], append(cmd[1:], img)...)
	return img
}

func TestGPTMatchesSfdisk(t *testing.T) {
	needTools(t, "sfdisk", "blkid", "mkfs.ext4", "mkfs.vfat", "mkswap")
	img := sparseFile(t, "gpt.img", 64*mib)
	script := `label: gpt
label-id: 5C4E2A10-3D4F-4A6B-9C8D-7E6F5A4B3C2D
start=2048, size=40960, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="root fs"
size=16384, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI system"
size=8192, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F, name=swap
size=2048, type=E6D6D379-F507-44C2-A23C-238F2A3DF928
`
	sfdisk := exec.Command("sfdisk", "-q", img)
	sfdisk.Stdin = strings.NewReader(script)
	if out, err := sfdisk.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	writeAt(t, img, 2048*512, mkfsImage(t, 40960*512, "mkfs.ext4", "-q", "-F", "-L", "gptroot"))
	writeAt(t, img, (2048+40960)*512, mkfsImage(t, 16384*512, "mkfs.vfat", "-n", "ESP"))
	writeAt(t, img, (2048+40960+16384)*512, mkfsImage(t, 8192*512, "mkswap", "-L", "gptswap"))

	res := probeFile(t, img)
	comparePartitions(t, img, res)
	if res.Table.MBR != "protective" || res.Table.Backup || res.Table.UUID != "5c4e2a10-3d4f-4a6b-9c8d-7e6f5a4b3c2d" {
		t.Errorf("table = %+v", res.Table)
	}
	wantTypes := []string{"ext4", "vfat", "swap", ""}
	for i, p := range res.Partitions {
		if contentType(p.Content) != wantTypes[i] {
			t.Errorf("partition %d holds %q, want %q", p.Index, contentType(p.Content), wantTypes[i])
		}
		if p.Content != nil {
			compareBlkid(t, img, p.Start, p.Size, wantTypes[i])
		}
	}
	if res.Content != nil {
		t.Errorf("whole disk content = %+v, want none", res.Content)
	}
	ms := res.Mountables()
	if len(ms) != 2 || ms[0].Index != 1 || ms[0].Label != "gptroot" || ms[1].Index != 2 || ms[1].PartName != "EFI system" {
		t.Errorf("mountables = %+v", ms)
	}
	if _, err := res.Select(-1); err == nil || !strings.Contains(err.Error(), "@1 ext4") {
		t.Errorf("Select(-1) = %v, want an error listing the choices", err)
	}
	if m, err := res.Select(2); err != nil || m.Type != "vfat" {
		t.Errorf("Select(2) = %+v, %v", m, err)
	}

	t.Run("hybrid", func(t *testing.T) {
		// Add a FAT entry next to the 0xEE one, as hybrid-MBR tools do.
		hyb := filepath.Join(t.TempDir(), "hybrid.img")
		run(t, "cp", "--sparse=always", img, hyb)
		f, err := os.OpenFile(hyb, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		e := []byte{0, 0, 0, 0, 0x0e, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
		putLE32(e[8:], 2048+40960)
		putLE32(e[12:], 16384)
		if _, err := f.WriteAt(e, 446+16); err != nil {
			t.Fatal(err)
		}
		f.Close()
		res := probeFile(t, hyb)
		if res.Table == nil || res.Table.Type != "gpt" || res.Table.MBR != "hybrid" || len(res.Partitions) != 4 {
			t.Fatalf("hybrid: table %+v, %d partitions", res.Table, len(res.Partitions))
		}
		comparePartitions(t, hyb, res)
	})

	t.Run("backup", func(t *testing.T) {
		// Destroy the primary header: the backup at the end must be used.
		bak := filepath.Join(t.TempDir(), "backup.img")
		run(t, "cp", "--sparse=always", img, bak)
		f, err := os.OpenFile(bak, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(make([]byte, 512), 512); err != nil {
			t.Fatal(err)
		}
		f.Close()
		res2 := probeFile(t, bak)
		if res2.Table == nil || !res2.Table.Backup || len(res2.Partitions) != len(res.Partitions) {
			t.Fatalf("backup: table %+v, %d partitions", res2.Table, len(res2.Partitions))
		}
		for i := range res.Partitions {
			a, b := res.Partitions[i], res2.Partitions[i]
			a.Content, b.Content = nil, nil
			if a != b {
				t.Errorf("backup partition %d = %+v, primary %+v", i, b, a)
			}
		}
		if blk := blkidExport(t, bak, 0, 0); blk["PTTYPE"] != "gpt" {
			t.Errorf("blkid does not see the backup GPT: %v", blk)
		}
	})
}

func putLE32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

func TestMBRMatchesSfdisk(t *testing.T) {
	needTools(t, "sfdisk", "blkid", "mkfs.ext2", "mkfs.vfat", "mkswap", "mkfs.minix")
	img := sparseFile(t, "mbr.img", 64*mib)
	script := `label: dos
label-id: 0x1234abcd
start=2048, size=10240, type=83, bootable
size=8192, type=c
size=60000, type=5
size=8192, type=83
size=8192, type=82
size=4096, type=81
`
	sfdisk := exec.Command("sfdisk", "-q", img)
	sfdisk.Stdin = strings.NewReader(script)
	if out, err := sfdisk.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	st := sfdiskJSON(t, img)
	byNode := map[string]int64{}
	for _, p := range st.PartitionTable.Partitions {
		byNode[strings.TrimPrefix(p.Node, img)] = p.Start * 512
	}
	writeAt(t, img, byNode["1"], mkfsImage(t, 10240*512, "mkfs.ext2", "-q", "-F", "-L", "boot"))
	writeAt(t, img, byNode["2"], mkfsImage(t, 8192*512, "mkfs.vfat", "-F", "12", "-n", "DOSPART"))
	writeAt(t, img, byNode["5"], mkfsImage(t, 8192*512, "mkswap", "-L", "logswap"))
	writeAt(t, img, byNode["6"], mkfsImage(t, 4096*512, "mkfs.minix", "-2"))

	res := probeFile(t, img)
	comparePartitions(t, img, res)
	want := map[int]string{1: "ext2", 2: "vfat", 3: "", 4: "", 5: "swap", 6: "minix"}
	for _, p := range res.Partitions {
		if got := contentType(p.Content); got != want[p.Index] {
			t.Errorf("partition %d holds %q, want %q", p.Index, got, want[p.Index])
		}
		if p.Content != nil {
			compareBlkid(t, img, p.Start, p.Size, want[p.Index])
		}
		if p.UUID != "1234abcd-"+strconv.FormatInt(int64(p.Index+0x100), 16)[1:] {
			t.Errorf("partition %d uuid %q", p.Index, p.UUID)
		}
	}
	if p := res.Partitions[2]; !p.Extended || p.Content != nil {
		t.Errorf("partition 3 = %+v, want an extended partition", p)
	}
	if p := res.Partitions[0]; p.Attributes != 0x80 {
		t.Errorf("partition 1 attributes %#x, want bootable", p.Attributes)
	}
	if p := res.Partitions[5]; !p.Logical || p.Index != 6 {
		t.Errorf("partition 6 = %+v, want logical", p)
	}
	if ms := res.Mountables(); len(ms) != 3 || ms[2].Index != 6 {
		t.Errorf("mountables = %+v", ms)
	}
}
