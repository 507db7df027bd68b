//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// dropCaches writes back dirty data and empties the host's caches, so the
// next reads come from the image file on disk: with what 3, the page cache
// and the dentry and inode caches; with 1, the page cache only.
func dropCaches(what int) error {
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte(strconv.Itoa(what)), 0o200); err != nil {
		return fmt.Errorf("dropping caches (run as root): %w", err)
	}
	return nil
}

// readFiles reads the 1 MiB files in order, checking each one's CRC, and
// returns MB/s.
func readFiles(root string, ds *dataset) (float64, error) {
	buf := make([]byte, 1<<20)
	var total int64
	start := time.Now()
	for i := 0; i < ds.sz.SmallFiles; i++ {
		rel := filepath.Join(filesDir, fmt.Sprintf("f%03d", i))
		crc, n, err := crcFile(filepath.Join(root, rel), buf)
		if err != nil {
			return 0, err
		}
		if crc != ds.fileCRC[rel] || n != 1<<20 {
			return 0, fmt.Errorf("%s read back wrong (%d bytes, CRC %08x)", rel, n, crc)
		}
		total += n
	}
	return mbps(total, time.Since(start)), nil
}

// readOne reads one file of the image, checking its CRC; MB/s.
func readOne(root, rel string, ds *dataset) (float64, error) {
	start := time.Now()
	crc, n, err := crcFile(filepath.Join(root, rel), make([]byte, 1<<20))
	if err != nil {
		return 0, err
	}
	d := time.Since(start)
	if crc != ds.fileCRC[rel] {
		return 0, fmt.Errorf("%s read back wrong (%d bytes, CRC %08x)", rel, n, crc)
	}
	return mbps(n, d), nil
}

func mbps(n int64, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }

// findRate runs find(1) over the find tree; entries/s.
func findRate(ctx context.Context, root string, entries int) (float64, error) {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "find", filepath.Join(root, findTree))
	cmd.Stdout = &out
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("find: %w: %s", err, stderr.Bytes())
	}
	d := time.Since(start)
	if n := bytes.Count(out.Bytes(), []byte("\n")); n != entries+1 {
		return 0, fmt.Errorf("find listed %d entries, want %d", n, entries+1)
	}
	return float64(entries) / d.Seconds(), nil
}

// statRate lstat(2)s every entry of the stat tree by path, without
// listing a directory; entries/s.
func statRate(root string, ds *dataset) (float64, error) {
	start := time.Now()
	for _, p := range ds.treePaths {
		fi, err := os.Lstat(filepath.Join(root, p))
		if err != nil {
			return 0, err
		}
		if fi.IsDir() != (filepath.Dir(p) == statTree) {
			return 0, fmt.Errorf("%s: wrong type %v", p, fi.Mode())
		}
	}
	return float64(len(ds.treePaths)) / time.Since(start).Seconds(), nil
}

// createRate creates n files of 4 KiB in dir/small and syncs the
// filesystem; files/s.
func createRate(dir string, run, n int) (float64, error) {
	start := time.Now()
	d := filepath.Join(dir, "small")
	if err := os.Mkdir(d, 0o755); err != nil {
		return 0, err
	}
	for i := 0; i < n; i++ {
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%05d", i)), smallContent(run, i), 0o644); err != nil {
			return 0, err
		}
	}
	if err := syncfs(d); err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func syncfs(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", path, err)
	}
	return nil
}

// untarRate extracts the source tarball into dir/x with GNU tar, then
// `sync -f`; files/s.
func untarRate(ctx context.Context, dir string, ds *dataset) (float64, error) {
	x := filepath.Join(dir, "x")
	start := time.Now()
	if err := os.Mkdir(x, 0o755); err != nil {
		return 0, err
	}
	if out, err := exec.CommandContext(ctx, "tar", "-xf", ds.tarball, "-C", x).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("tar -x: %w: %s", err, tail(string(out), 5))
	}
	if out, err := exec.CommandContext(ctx, "sync", "-f", x).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("sync -f: %w: %s", err, out)
	}
	return float64(len(ds.tarCRC)) / time.Since(start).Seconds(), nil
}

// fioJob is one fio run (buffered I/O, psync engine).
type fioJob struct {
	name, file, rw, bs string
	size               int64 // bytes
	runtime            int   // seconds; 0: until size is done
	verify             bool  // writes: crc32c headers; reads: check them
	readonly           bool
}

// fioResult is what a job did, from fio's JSON output.
type fioResult struct {
	Bytes int64   // bytes moved
	MBps  float64 // as fio measures it (end_fsync included for writes)
	IOPS  float64
}

func (j fioJob) args() []string {
	a := []string{
		"--name=" + j.name, "--filename=" + j.file, "--rw=" + j.rw, "--bs=" + j.bs,
		"--size=" + strconv.FormatInt(j.size, 10), "--direct=0", "--ioengine=psync",
		"--output-format=json", "--verify_state_save=0",
	}
	if j.runtime > 0 {
		a = append(a, "--runtime="+strconv.Itoa(j.runtime))
	}
	write := j.rw == "write" || j.rw == "randwrite"
	if write {
		a = append(a, "--end_fsync=1", "--fallocate=none")
	}
	if j.verify {
		a = append(a, "--verify=crc32c")
		if write {
			a = append(a, "--do_verify=0")
		}
	}
	if j.readonly {
		a = append(a, "--readonly")
	}
	return a
}

// fio runs a job and fails on any I/O or verification error.
func fio(ctx context.Context, j fioJob) (fioResult, error) {
	cmd := exec.CommandContext(ctx, "fio", j.args()...)
	cmd.Dir = filepath.Dir(j.file)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err := cmd.Run()
	res, perr := parseFio(out.Bytes(), j.rw)
	if err != nil {
		if perr != nil {
			err = fmt.Errorf("%w (%v)", err, perr)
		}
		return res, fmt.Errorf("fio %s on %s: %w: %s", j.name, j.file, err, tail(stderr.String(), 8))
	}
	if perr != nil {
		return res, fmt.Errorf("fio %s: %w", j.name, perr)
	}
	return res, nil
}

// parseFio reads fio's --output-format=json (which may follow warnings).
func parseFio(b []byte, rw string) (fioResult, error) {
	var res fioResult
	if i := bytes.IndexByte(b, '{'); i > 0 {
		b = b[i:]
	}
	var doc struct {
		Jobs []struct {
			Error int `json:"error"`
			Read  struct {
				IOBytes int64   `json:"io_bytes"`
				BW      int64   `json:"bw_bytes"`
				IOPS    float64 `json:"iops"`
			} `json:"read"`
			Write struct {
				IOBytes int64   `json:"io_bytes"`
				BW      int64   `json:"bw_bytes"`
				IOPS    float64 `json:"iops"`
			} `json:"write"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return res, fmt.Errorf("parsing fio's output: %w", err)
	}
	if len(doc.Jobs) != 1 {
		return res, fmt.Errorf("fio reported %d jobs", len(doc.Jobs))
	}
	j := doc.Jobs[0]
	if j.Error != 0 {
		return res, fmt.Errorf("fio job error %d (%s)", j.Error, unix.ErrnoName(unix.Errno(j.Error)))
	}
	d := j.Read
	if rw == "write" || rw == "randwrite" {
		d = j.Write
	}
	if d.IOBytes == 0 {
		return res, errors.New("fio moved no data")
	}
	return fioResult{Bytes: d.IOBytes, MBps: float64(d.BW) / 1e6, IOPS: d.IOPS}, nil
}
