//go:build linux

package main

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// castagnoli is CRC-32C, which the CPU computes at memory speed, so
// checking every byte read costs the measured reads next to nothing.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// sizes are the workload sizes (full run or -quick).
type sizes struct {
	Runs        int   `json:"runs"`
	SmallFiles  int   `json:"small_files"`   // files of 1 MiB read cold
	BigMiB      int64 `json:"big_mib"`       // the file read cold in one go
	SeqMiB      int64 `json:"seq_mib"`       // the file fio reads sequentially
	RandMiB     int64 `json:"rand_mib"`      // the file fio reads at random
	TreeEntries int   `json:"tree_entries"`  // entries of each of the two trees (find, stat)
	Creates     int   `json:"creates"`       // small files created + sync
	TarFiles    int   `json:"tar_files"`     // files in the source tree tarball
	FioWriteMiB int64 `json:"fio_write_mib"` // fio sequential write size (capped by FioWriteSec)
	FioWriteSec int   `json:"fio_write_sec"`
	RandSec     int   `json:"rand_sec"` // fio random-read run time
	ImageGiB    int64 `json:"image_gib"`
}

var (
	fullSizes = sizes{Runs: 3, SmallFiles: 150, BigMiB: 256, SeqMiB: 128, RandMiB: 256, TreeEntries: 10000, Creates: 2000,
		TarFiles: 3000, FioWriteMiB: 256, FioWriteSec: 20, RandSec: 8, ImageGiB: 3}
	quickSizes = sizes{Runs: 1, SmallFiles: 30, BigMiB: 64, SeqMiB: 32, RandMiB: 64, TreeEntries: 2000, Creates: 500,
		TarFiles: 500, FioWriteMiB: 32, FioWriteSec: 8, RandSec: 3, ImageGiB: 1}
)

// The image's layout (paths relative to its root).
const (
	filesDir  = "files"  // SmallFiles x 1 MiB: f000, f001...
	bigFile   = "big"    // BigMiB
	seqFile   = "seq"    // SeqMiB written by fio (with verify headers), for its sequential reads
	randFile  = "rand"   // RandMiB, for fio's random reads
	findTree  = "tree1"  // TreeEntries entries for find
	statTree  = "tree2"  // TreeEntries entries for stat
	writesDir = "w"      // each run writes under w/rN
	marker    = "qbench" // a file in the root: the mount is ready once readdir shows it
)

// dataset is what the benchmark knows about its images and tarball, to
// check every byte read and written.
type dataset struct {
	sz    sizes
	quick bool
	// dropBetween is the drop_caches value between phases (1 or 3).
	dropBetween int
	pristine    string            // the image as built; each method gets a copy
	tarball     string            // the source tree tarball, on the host
	fileCRC     map[string]uint32 // image path -> CRC-32C of its contents
	tarCRC      map[string]uint32 // regular files in the tarball -> CRC-32C
	tarBytes    int64
	treePaths   []string // statTree's entries, relative to the image root
}

// fill writes n bytes of seeded pseudo-random data to w and returns their CRC.
func fill(w io.Writer, seed uint64, n int64) (uint32, error) {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	src := rand.NewChaCha8(key)
	buf := make([]byte, 1<<20)
	var crc uint32
	for n > 0 {
		b := buf[:min(int64(len(buf)), n)]
		src.Read(b)
		crc = crc32.Update(crc, castagnoli, b)
		if _, err := w.Write(b); err != nil {
			return 0, err
		}
		n -= int64(len(b))
	}
	return crc, nil
}

func writeFile(path string, seed uint64, n int64) (uint32, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	crc, err := fill(f, seed, n)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return crc, err
}

// makeTree creates entries entries under root: directories of 100 entries
// each (the directories count). It returns the paths, relative to base.
func makeTree(base, root string, entries int) ([]string, error) {
	var paths []string
	const perDir = 100
	dirs := (entries + perDir - 1) / perDir
	for d := 0; d < dirs; d++ {
		dir := filepath.Join(root, fmt.Sprintf("d%03d", d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		rel, _ := filepath.Rel(base, dir)
		paths = append(paths, rel)
	}
	for i := 0; len(paths) < entries; i++ {
		p := filepath.Join(root, fmt.Sprintf("d%03d", i%dirs), fmt.Sprintf("f%05d", i))
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			return nil, err
		}
		rel, _ := filepath.Rel(base, p)
		paths = append(paths, rel)
	}
	return paths, nil
}

// buildDataset makes the pristine ext4 image (mkfs.ext4 -d from a staging
// directory, no mount needed) and the source tree tarball under dir.
func buildDataset(ctx context.Context, dir string, sz sizes) (*dataset, error) {
	ds := &dataset{sz: sz, fileCRC: map[string]uint32{}, tarCRC: map[string]uint32{}}
	stage := filepath.Join(dir, "stage")
	defer os.RemoveAll(stage)
	for _, d := range []string{filesDir, writesDir} {
		if err := os.MkdirAll(filepath.Join(stage, d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(stage, marker), []byte("qmount bench image\n"), 0o644); err != nil {
		return nil, err
	}
	seed := uint64(1)
	add := func(rel string, n int64) error {
		crc, err := writeFile(filepath.Join(stage, rel), seed, n)
		seed++
		if err != nil {
			return fmt.Errorf("writing %s: %w", rel, err)
		}
		ds.fileCRC[rel] = crc
		return nil
	}
	for i := 0; i < sz.SmallFiles; i++ {
		if err := add(filepath.Join(filesDir, fmt.Sprintf("f%03d", i)), 1<<20); err != nil {
			return nil, err
		}
	}
	if err := add(bigFile, sz.BigMiB<<20); err != nil {
		return nil, err
	}
	if err := add(randFile, sz.RandMiB<<20); err != nil {
		return nil, err
	}
	// fio writes its own file, with a CRC-32C header in every 1 MiB block,
	// so that the read job checks every block it reads.
	if _, err := fio(ctx, fioJob{name: "seq", file: filepath.Join(stage, seqFile), rw: "write", bs: "1M",
		size: sz.SeqMiB << 20, verify: true}); err != nil {
		return nil, err
	}
	if _, err := makeTree(stage, filepath.Join(stage, findTree), sz.TreeEntries); err != nil {
		return nil, err
	}
	paths, err := makeTree(stage, filepath.Join(stage, statTree), sz.TreeEntries)
	if err != nil {
		return nil, err
	}
	ds.treePaths = paths

	ds.pristine = filepath.Join(dir, "pristine.img")
	if err := os.Truncate(ds.pristine, 0); err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	f, err := os.Create(ds.pristine)
	if err != nil {
		return nil, err
	}
	f.Close()
	if err := os.Truncate(ds.pristine, sz.ImageGiB<<30); err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-L", "qbench", "-d", stage, ds.pristine).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mkfs.ext4 -d: %w: %s", err, out)
	}

	ds.tarball = filepath.Join(dir, "src.tar")
	if ds.tarBytes, err = writeSourceTar(ds.tarball, sz.TarFiles, ds.tarCRC); err != nil {
		return nil, fmt.Errorf("writing the source tarball: %w", err)
	}
	return ds, nil
}

// writeSourceTar writes a synthetic source tree resembling a project's:
// nested packages of files with mostly small, some larger sizes, with
// text-like contents. It records each file's CRC in crcs.
func writeSourceTar(path string, files int, crcs map[string]uint32) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	tw := tar.NewWriter(bw)
	r := rand.New(rand.NewPCG(42, 6))
	mtime := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	words := strings.Fields("func return if err nil for range type struct package import var const := } { ( ) ctx context error string int byte map chan go defer select case switch default // the a of to in")
	var dirs []string
	var total int64
	newDir := func(parent string) (string, error) {
		d := fmt.Sprintf("%spkg%03d/", parent, len(dirs))
		dirs = append(dirs, d)
		return d, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: mtime, Format: tar.FormatPAX})
	}
	root, err := newDir("src/")
	if err != nil {
		return 0, err
	}
	cur := root
	buf := make([]byte, 0, 1<<18)
	for i := 0; i < files; i++ {
		if i%12 == 0 { // a new package every dozen files, nested up to 5 deep
			parent := dirs[r.IntN(len(dirs))]
			if strings.Count(parent, "/") > 5 {
				parent = root
			}
			if cur, err = newDir(parent); err != nil {
				return 0, err
			}
		}
		// Sizes: log-uniform from 64 bytes to 64 KiB (median 2 KiB, mean 9 KiB).
		size := int(64 * math.Exp2(r.Float64()*10))
		buf = buf[:0]
		for len(buf) < size {
			buf = append(buf, words[r.IntN(len(words))]...)
			if r.IntN(8) == 0 {
				buf = append(buf, '\n')
			} else {
				buf = append(buf, ' ')
			}
		}
		buf = buf[:size]
		name := fmt.Sprintf("%sfile%05d.go", cur, i)
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(size), ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return 0, err
		}
		if _, err := tw.Write(buf); err != nil {
			return 0, err
		}
		crcs[name] = crc32.Checksum(buf, castagnoli)
		total += int64(size)
	}
	if err := tw.Close(); err != nil {
		return 0, err
	}
	if err := bw.Flush(); err != nil {
		return 0, err
	}
	return total, f.Close()
}

// smallContent is the content of created file i of run run: 4 KiB that
// name their file, so a misplaced file is caught too.
func smallContent(run, i int) []byte {
	line := fmt.Sprintf("run %d file %05d qmount bench\n", run, i)
	b := make([]byte, 0, 4096)
	for len(b) < 4096 {
		b = append(b, line...)
	}
	return b[:4096]
}

// verifyImage checks an image after a method is done with it: e2fsck -fn
// finds nothing, and the kernel's own mount of it (read-only) holds what
// every run wrote: the created files, the extracted tree, fio's file.
func verifyImage(ctx context.Context, ds *dataset, img, mnt string, runs []runRecord) error {
	if out, err := exec.CommandContext(ctx, "e2fsck", "-fn", img).CombinedOutput(); err != nil {
		return fmt.Errorf("e2fsck -fn: %w\n%s", err, tail(string(out), 20))
	}
	if out, err := exec.CommandContext(ctx, "mount", "-o", "loop,ro", img, mnt).CombinedOutput(); err != nil {
		return fmt.Errorf("mounting for verification: %w: %s", err, out)
	}
	defer unmountKernel(context.Background(), img, mnt)
	if err := checkCRCs(mnt, ds.fileCRC); err != nil {
		return err
	}
	for _, r := range runs {
		base := filepath.Join(mnt, writesDir, r.dir)
		for i := 0; i < ds.sz.Creates; i++ {
			b, err := os.ReadFile(filepath.Join(base, "small", fmt.Sprintf("f%05d", i)))
			if err != nil {
				return fmt.Errorf("created file: %w", err)
			}
			if string(b) != string(smallContent(r.n, i)) {
				return fmt.Errorf("created file %s/small/f%05d has the wrong contents", r.dir, i)
			}
		}
		crcs := map[string]uint32{}
		for name, c := range ds.tarCRC {
			crcs[filepath.Join(writesDir, r.dir, "x", name)] = c
		}
		if err := checkCRCs(mnt, crcs); err != nil {
			return fmt.Errorf("extracted tree: %w", err)
		}
		if err := countFiles(filepath.Join(base, "x"), len(ds.tarCRC)); err != nil {
			return err
		}
		if r.fioBytes > 0 {
			if _, err := fio(ctx, fioJob{name: "verify", file: filepath.Join(base, "fio"), rw: "read", bs: "1M", size: r.fioBytes, verify: true}); err != nil {
				return fmt.Errorf("fio's file as the kernel sees it: %w", err)
			}
		}
	}
	return nil
}

// checkCRCs reads every file of want below root and compares checksums.
func checkCRCs(root string, want map[string]uint32) error {
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	buf := make([]byte, 1<<20)
	for _, n := range names {
		crc, _, err := crcFile(filepath.Join(root, n), buf)
		if err != nil {
			return err
		}
		if crc != want[n] {
			return fmt.Errorf("%s: CRC-32C %08x, want %08x", n, crc, want[n])
		}
	}
	return nil
}

func crcFile(path string, buf []byte) (uint32, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var crc uint32
	var n int64
	for {
		k, err := f.Read(buf)
		crc = crc32.Update(crc, castagnoli, buf[:k])
		n += int64(k)
		if err == io.EOF {
			return crc, n, nil
		}
		if err != nil {
			return 0, 0, fmt.Errorf("reading %s: %w", path, err)
		}
	}
}

// countFiles checks that root holds exactly want regular files.
func countFiles(root string, want int) error {
	n := 0
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			n++
		}
		return nil
	})
	if err != nil {
		return err
	}
	if n != want {
		return fmt.Errorf("%s holds %d files, want %d", root, n, want)
	}
	return nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
