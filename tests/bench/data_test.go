//go:build linux

package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (scripts/install-deps.sh bench installs it)", tool)
		}
	}
}

// TestSourceTar extracts the synthetic source tree with GNU tar and checks
// it against the recorded checksums, then checks that a changed byte is
// caught.
func TestSourceTar(t *testing.T) {
	requireTools(t, "tar")
	dir := t.TempDir()
	crcs := map[string]uint32{}
	total, err := writeSourceTar(filepath.Join(dir, "src.tar"), 300, crcs)
	if err != nil {
		t.Fatal(err)
	}
	if len(crcs) != 300 || total <= 0 {
		t.Fatalf("%d files, %d bytes", len(crcs), total)
	}
	x := filepath.Join(dir, "x")
	os.Mkdir(x, 0o755)
	if out, err := exec.Command("tar", "-xf", filepath.Join(dir, "src.tar"), "-C", x).CombinedOutput(); err != nil {
		t.Fatalf("tar -x: %v\n%s", err, out)
	}
	if err := checkCRCs(x, crcs); err != nil {
		t.Fatal(err)
	}
	if err := countFiles(x, 300); err != nil {
		t.Fatal(err)
	}
	// Nested directories, as in a source tree.
	deep := 0
	for name := range crcs {
		if strings.Count(name, "/") >= 3 {
			deep++
		}
	}
	if deep == 0 {
		t.Error("no file is nested two directories below the root")
	}
	var victim string
	for name := range crcs {
		victim = name
		break
	}
	f, err := os.OpenFile(filepath.Join(x, victim), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{0xff}, 0)
	f.Close()
	if err := checkCRCs(x, crcs); err == nil || !strings.Contains(err.Error(), victim) {
		t.Errorf("a changed byte in %s went unnoticed: %v", victim, err)
	}
}

// TestFioVerify runs real fio jobs the way the benchmark does: a write
// with checksum headers, a verified read, and a read that must fail once
// a block is corrupted.
func TestFioVerify(t *testing.T) {
	requireTools(t, "fio")
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "seq")
	w, err := fio(ctx, fioJob{name: "seq", file: file, rw: "write", bs: "1M", size: 8 << 20, verify: true})
	if err != nil {
		t.Fatal(err)
	}
	if w.Bytes != 8<<20 || w.MBps <= 0 {
		t.Fatalf("write: %+v", w)
	}
	r, err := fio(ctx, fioJob{name: "seq", file: file, rw: "read", bs: "1M", size: w.Bytes, verify: true, readonly: true})
	if err != nil {
		t.Fatal(err)
	}
	if r.Bytes != w.Bytes {
		t.Fatalf("read %d bytes, wrote %d", r.Bytes, w.Bytes)
	}
	rr, err := fio(ctx, fioJob{name: "rand", file: file, rw: "randread", bs: "4k", size: w.Bytes, runtime: 1, readonly: true})
	if err != nil {
		t.Fatal(err)
	}
	if rr.IOPS <= 0 {
		t.Fatalf("random read: %+v", rr)
	}
	f, err := os.OpenFile(file, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("corrupt"), 3<<20+4096)
	f.Close()
	if _, err := fio(ctx, fioJob{name: "seq", file: file, rw: "read", bs: "1M", size: w.Bytes, verify: true, readonly: true}); err == nil {
		t.Fatal("fio read a corrupted block without complaint")
	}
}

// TestImage builds a small dataset with mkfs.ext4 -d, mounts it with the
// kernel as the benchmark does, runs the read workloads on it and checks
// verifyImage against what one run writes.
func TestImage(t *testing.T) {
	requireTools(t, "mkfs.ext4", "e2fsck", "fio", "tar", "find", "losetup")
	if os.Geteuid() != 0 {
		t.Skip("needs root (loop mount)")
	}
	ctx := context.Background()
	dir := t.TempDir()
	sz := sizes{Runs: 1, SmallFiles: 3, BigMiB: 4, SeqMiB: 2, RandMiB: 2, TreeEntries: 250, Creates: 20,
		TarFiles: 40, FioWriteMiB: 2, FioWriteSec: 5, RandSec: 1, ImageGiB: 1}
	ds, err := buildDataset(ctx, dir, sz)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds.treePaths) != 250 {
		t.Fatalf("stat tree has %d entries", len(ds.treePaths))
	}
	img := filepath.Join(dir, "a.img")
	if out, err := exec.Command("cp", "--sparse=always", ds.pristine, img).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	e := &env{tr: newTracker()}
	defer e.tr.totals()
	start := time.Now()
	m, err := mountKernel(ctx, e, img, mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if m != nil {
			m.force()
		}
	}()
	if err := waitReady(ctx, mnt, time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel mount ready in %v", time.Since(start))
	if _, err := readFiles(mnt, ds); err != nil {
		t.Fatal(err)
	}
	if _, err := readOne(mnt, bigFile, ds); err != nil {
		t.Fatal(err)
	}
	if _, err := findRate(ctx, mnt, sz.TreeEntries); err != nil {
		t.Fatal(err)
	}
	if _, err := statRate(mnt, ds); err != nil {
		t.Fatal(err)
	}
	rec := runRecord{n: 0, dir: "r0"}
	w := filepath.Join(mnt, writesDir, "r0")
	if err := os.Mkdir(w, 0o755); err != nil {
		t.Fatal(err)
	}
	res, err := fio(ctx, fioJob{name: "seq", file: filepath.Join(w, "fio"), rw: "write", bs: "1M", size: 2 << 20, verify: true})
	if err != nil {
		t.Fatal(err)
	}
	rec.fioBytes = res.Bytes
	if _, err := createRate(w, 0, sz.Creates); err != nil {
		t.Fatal(err)
	}
	if _, err := untarRate(ctx, w, ds); err != nil {
		t.Fatal(err)
	}
	if err := m.unmount(ctx); err != nil {
		t.Fatal(err)
	}
	m = nil
	if l := loopsOf(img); len(l) > 0 {
		t.Fatalf("loop devices left: %v", l)
	}
	if err := verifyImage(ctx, ds, img, mnt, []runRecord{rec}); err != nil {
		t.Fatal(err)
	}
	// A run whose files are not there must not pass.
	if err := verifyImage(ctx, ds, img, mnt, []runRecord{rec, {n: 1, dir: "r1"}}); err == nil {
		t.Error("verifyImage passed a run that wrote nothing")
	}
	if isMountPoint(mnt) {
		t.Error("verifyImage left its mount")
	}
}

// TestReadProc samples this process.
func TestReadProc(t *testing.T) {
	s, err := readProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.hwmKB <= 0 {
		t.Errorf("VmHWM %d kB", s.hwmKB)
	}
	if _, err := readProc(1 << 30); err == nil {
		t.Error("sampled a process that does not exist")
	}
	if !ancestors()[os.Getpid()] {
		t.Error("ancestors lacks this process")
	}
}
