package probe

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// buildGPT returns a small disk image (sectors of 512 bytes) with a valid
// protective MBR, primary and backup GPT, and the given partitions
// (start, end LBA, type GUID bytes).
func buildGPT(sectors int, parts [][2]uint64) []byte {
	d := make([]byte, sectors*512)
	le := binary.LittleEndian
	// Protective MBR.
	d[446+4] = 0xEE
	le.PutUint32(d[446+8:], 1)
	le.PutUint32(d[446+12:], uint32(sectors-1))
	d[510], d[511] = 0x55, 0xaa
	const nEnt = 16
	ents := make([]byte, nEnt*128)
	for i, p := range parts {
		e := ents[i*128:]
		copy(e[0:16], []byte{0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4})
		e[16] = byte(i + 1)
		le.PutUint64(e[32:], p[0])
		le.PutUint64(e[40:], p[1])
		copy(e[56:], []byte{'p', 0, byte('0' + i), 0})
	}
	last := uint64(sectors - 1)
	entSectors := uint64(len(ents) / 512)
	hdr := func(my, alt, entLBA uint64) []byte {
		h := make([]byte, 92)
		copy(h, "EFI PART")
		le.PutUint32(h[8:], 0x00010000)
		le.PutUint32(h[12:], 92)
		le.PutUint64(h[24:], my)
		le.PutUint64(h[32:], alt)
		le.PutUint64(h[40:], 2+entSectors)
		le.PutUint64(h[48:], last-1-entSectors)
		h[56] = 0x42
		le.PutUint64(h[72:], entLBA)
		le.PutUint32(h[80:], nEnt)
		le.PutUint32(h[84:], 128)
		le.PutUint32(h[88:], crc32IEEE(ents))
		le.PutUint32(h[16:], crc32IEEE(h))
		return h
	}
	copy(d[512:], hdr(1, last, 2))
	copy(d[1024:], ents)
	copy(d[(last-entSectors)*512:], ents)
	copy(d[last*512:], hdr(last, 1, last-entSectors))
	return d
}

// buildMBR returns a small disk with an extended partition holding a
// chain of logical partitions; loop makes the last EBR link back to the
// first (a hostile cycle).
func buildMBR(sectors int, logical int, loop bool) []byte {
	d := make([]byte, sectors*512)
	le := binary.LittleEndian
	put := func(sec, slot int, typ byte, start, size uint32) {
		e := d[sec*512+446+slot*16:]
		e[4] = typ
		le.PutUint32(e[8:], start)
		le.PutUint32(e[12:], size)
		d[sec*512+510], d[sec*512+511] = 0x55, 0xaa
	}
	le.PutUint32(d[440:], 0xdeadbeef)
	put(0, 0, 0x83, 4, 8)
	ext := uint32(16)
	put(0, 1, 0x05, ext, uint32(sectors)-ext)
	for i := 0; i < logical; i++ {
		ebr := int(ext) + i*4
		put(ebr, 0, 0x83, 1, 3)
		switch {
		case i+1 < logical:
			put(ebr, 1, 0x05, uint32((i+1)*4), 4)
		case loop:
			put(ebr, 1, 0x05, 0x10000, 4) // points past the end; then back
			put(ebr, 1, 0x05, 4, 4)
		}
	}
	return d
}

// seedImages loads the gzip'd image prefixes in testdata/seeds (cut from
// real mkfs output by TestGenerateSeeds).
func seedImages(t testing.TB) map[string][]byte {
	paths, _ := filepath.Glob(filepath.Join("testdata", "seeds", "*.gz"))
	out := map[string][]byte{}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		b, err := io.ReadAll(io.LimitReader(zr, 4<<20))
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		out[strings.TrimSuffix(filepath.Base(p), ".gz")] = b
	}
	return out
}

func addSeeds(f *testing.F) {
	for _, b := range seedImages(f) {
		f.Add(b)
	}
	f.Add(buildGPT(128, [][2]uint64{{34, 60}, {61, 90}}))
	f.Add(buildMBR(64, 3, false))
	f.Add(buildMBR(64, 3, true))
}

func checkResult(t *testing.T, res *Result) {
	if res == nil {
		t.Fatal("nil result without error")
	}
	for _, p := range res.Partitions {
		if p.Index < 1 || p.Index > 512 {
			t.Fatalf("partition index %d", p.Index)
		}
	}
	res.Mountables()
	if _, err := json.Marshal(res); err != nil {
		t.Fatal(err)
	}
}

func FuzzProbe(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := Probe(context.Background(), bytes.NewReader(data), int64(len(data)))
		if err != nil {
			t.Fatalf("Probe on an in-memory image failed: %v", err)
		}
		checkResult(t, res)
	})
}

func FuzzDetect(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		for _, off := range []int64{0, 512} {
			if off > int64(len(data)) {
				continue
			}
			if _, err := Detect(r, off, int64(len(data))-off); err != nil {
				t.Fatalf("Detect: %v", err)
			}
		}
		// A region claiming to be far larger than the data must not make
		// the probe read or allocate without bound.
		if _, err := Detect(r, 0, 1<<50); err != nil {
			t.Fatalf("Detect (oversized): %v", err)
		}
	})
}

// seedPrefix is how much of each real image becomes a fuzz seed.
var seedPrefix = map[string]int64{
	"btrfs": 72 << 10, "iso9660": 40 << 10, "iso9660-joliet": 40 << 10, "udf": 0, "luks2": 32 << 10,
	"luks1": 4 << 10, "xfs": 4 << 10, "swap": 8 << 10, "jfs": 40 << 10, "reiserfs": 72 << 10,
}

// TestGenerateSeeds regenerates testdata/seeds from real mkfs output. It
// runs only with QMOUNT_PROBE_SEEDS=1.
func TestGenerateSeeds(t *testing.T) {
	if os.Getenv("QMOUNT_PROBE_SEEDS") != "1" {
		t.Skip("set QMOUNT_PROBE_SEEDS=1 to regenerate the fuzz seed corpus")
	}
	dir := filepath.Join("testdata", "seeds")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range fsCases {
		n, ok := seedPrefix[tc.name]
		if !ok {
			n = 24 << 10
		}
		if n == 0 {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			needTools(t, tc.tools...)
			img := filepath.Join(t.TempDir(), "img")
			if tc.size > 0 {
				img = sparseFile(t, "img", tc.size)
			}
			tc.make(t, img)
			b, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(b)) > n {
				b = b[:n]
			}
			var buf bytes.Buffer
			zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
			zw.Write(b)
			zw.Close()
			if err := os.WriteFile(filepath.Join(dir, tc.name+".gz"), buf.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestSeedsStillDetected keeps the fuzz seeds honest: each prefix of a real
// image must still be recognised as its format where the prefix holds the
// whole superblock.
func TestSeedsStillDetected(t *testing.T) {
	seeds := seedImages(t)
	if len(seeds) == 0 {
		t.Fatal("no seeds in testdata/seeds")
	}
	want := map[string]string{"ext2": "ext2", "ext3": "ext3", "ext4": "ext4", "xfs": "xfs",
		"vfat12": "vfat", "vfat16": "vfat", "vfat32": "vfat", "exfat": "exfat", "luks1": "crypto_LUKS",
		"luks2": "crypto_LUKS", "iso9660": "iso9660", "squashfs": "squashfs", "erofs": "erofs", "f2fs": "f2fs"}
	for name, typ := range want {
		b, ok := seeds[name]
		if !ok {
			t.Errorf("seed %s missing", name)
			continue
		}
		c, err := Detect(bytes.NewReader(b), 0, int64(len(b)))
		if err != nil || c == nil || c.Type != typ {
			t.Errorf("seed %s: Detect = %+v, %v; want %s", name, c, err, typ)
		}
	}
}
