//go:build linux

// Command datapath measures qmount's 9P + FUSE data path alone: the same
// workloads on a plain directory and on `qmount loopback` of it, in one run,
// reported as ratios (loopback / native; higher is better, 1.0 = native).
// go-fuse's own passthrough file system of the same directory (no 9P) is
// measured alongside: what FUSE itself allows on this kernel.
//
// Run it as root (it drops the page cache before cold reads) with
// `make bench-datapath`.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

func main() {
	var (
		qmount  = flag.String("qmount", "build/qmount", "qmount binary")
		dir     = flag.String("dir", "", "work directory (default: a new one under $TMPDIR)")
		runs    = flag.Int("runs", 3, "runs per measurement (median reported)")
		bigMiB  = flag.Int("big", 1024, "size of the sequential file in MiB")
		small   = flag.Int("small", 10000, "number of small files")
		entries = flag.Int("entries", 100000, "entries in the find tree")
		out     = flag.String("out", "build/bench/datapath.md", "where to write the Markdown table too")
	)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *qmount, *dir, *runs, *bigMiB, *small, *entries, *out); err != nil {
		fmt.Fprintf(os.Stderr, "bench-datapath: %v\n", err)
		os.Exit(1)
	}
}

type result struct {
	name, unit            string
	native, qmount, floor float64 // medians, in unit (higher is better)
	runs                  map[string][]float64
}

func run(ctx context.Context, qmount, dir string, runs, bigMiB, small, entries int, out string) error {
	if dir == "" {
		d, err := os.MkdirTemp("", "qmount-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	src := filepath.Join(dir, "src")
	mnt := filepath.Join(dir, "mnt")
	fmnt := filepath.Join(dir, "floor")
	for _, d := range []string{src, mnt, fmnt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	cmd := exec.CommandContext(ctx, qmount, "loopback", src, mnt)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting qmount loopback: %w", err)
	}
	defer func() {
		exec.Command("fusermount3", "-u", mnt).Run()
		cmd.Wait()
	}()
	if err := waitMounted(mnt, 20*time.Second); err != nil {
		return err
	}
	floor, err := mountFloor(src, fmnt)
	if err != nil {
		return err
	}
	defer floor.Unmount()

	// The same paths, reached natively and through the mounts.
	sides := []struct{ name, root string }{{"native", src}, {"qmount", mnt}, {"floor", fmnt}}
	var results []result
	measure := func(name, unit string, f func(root string, i int) (float64, error)) error {
		r := result{name: name, unit: unit, runs: map[string][]float64{}}
		for i := 0; i < runs; i++ {
			for _, s := range sides {
				v, err := f(s.root, i)
				if err != nil {
					return fmt.Errorf("%s on %s: %w", name, s.name, err)
				}
				r.runs[s.name] = append(r.runs[s.name], v)
			}
		}
		r.native, r.qmount, r.floor = median(r.runs["native"]), median(r.runs["qmount"]), median(r.runs["floor"])
		fmt.Fprintf(os.Stderr, "%-34s native %10.1f  qmount %10.1f  go-fuse %10.1f %s  ratio %.2f (go-fuse %.2f)\n",
			name, r.native, r.qmount, r.floor, unit, r.qmount/r.native, r.floor/r.native)
		results = append(results, r)
		return nil
	}

	big := int64(bigMiB) << 20
	if err := measure(fmt.Sprintf("sequential write %d MiB + fsync", bigMiB), "MB/s", func(root string, i int) (float64, error) {
		return seqWrite(filepath.Join(root, fmt.Sprintf("big-%s", sideTag(root, src, mnt))), big)
	}); err != nil {
		return err
	}
	if err := measure(fmt.Sprintf("sequential read %d MiB, cold", bigMiB), "MB/s", func(root string, i int) (float64, error) {
		return seqRead(filepath.Join(root, fmt.Sprintf("big-%s", sideTag(root, src, mnt))))
	}); err != nil {
		return err
	}
	for _, s := range sides {
		os.Remove(filepath.Join(src, "big-"+sideTag(s.root, src, mnt)))
	}
	if err := measure(fmt.Sprintf("create+stat+read %d files", small), "files/s", func(root string, i int) (float64, error) {
		d := filepath.Join(root, fmt.Sprintf("small-%s-%d", sideTag(root, src, mnt), i))
		return smallFiles(d, small)
	}); err != nil {
		return err
	}
	tree := filepath.Join(src, "tree")
	if err := makeTree(tree, entries); err != nil {
		return err
	}
	if err := measure(fmt.Sprintf("find over %d entries, cold", entries), "entries/s", func(root string, i int) (float64, error) {
		return find(filepath.Join(root, "tree"), entries)
	}); err != nil {
		return err
	}
	if err := measure("ls -l of 10000 entries, cold", "entries/s", func(root string, i int) (float64, error) {
		return lsl(filepath.Join(root, "tree", "d0000"))
	}); err != nil {
		return err
	}

	var b strings.Builder
	fmt.Fprintf(&b, "Data path alone (`make bench-datapath`, %s, %d runs, medians; ratio = qmount loopback / native, higher is better; "+
		"go-fuse passthrough: go-fuse's own loopback file system of the same directory, no 9P, what FUSE allows here)\n\n",
		time.Now().UTC().Format("2006-01-02"), runs)
	fmt.Fprintf(&b, "| workload | native | qmount loopback | ratio | go-fuse passthrough | ratio |\n| --- | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range results {
		fmt.Fprintf(&b, "| %s | %.0f %s | %.0f %s | %.2f | %.0f %s | %.2f |\n",
			r.name, r.native, r.unit, r.qmount, r.unit, r.qmount/r.native, r.floor, r.unit, r.floor/r.native)
	}
	fmt.Print(b.String())
	if out != "" {
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
		return os.WriteFile(out, []byte(b.String()), 0o644)
	}
	return nil
}

// sideTag names a side's own files in the shared directory.
func sideTag(root, src, mnt string) string {
	switch root {
	case src:
		return "n"
	case mnt:
		return "q"
	}
	return "f"
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func waitMounted(mnt string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile("/proc/self/mounts")
		if bytes.Contains(b, []byte(" "+mnt+" fuse")) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s was not mounted within %v", mnt, d)
}

// dropCaches empties the page, dentry and inode caches so reads are cold.
func dropCaches() error {
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200); err != nil {
		return fmt.Errorf("dropping caches (run as root): %w", err)
	}
	return nil
}

func seqWrite(path string, size int64) (float64, error) {
	buf := bytes.Repeat([]byte("qmount-bench-data"), (1<<20)/17+1)[:1<<20]
	start := time.Now()
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	for n := int64(0); n < size; n += int64(len(buf)) {
		if _, err := f.Write(buf); err != nil {
			f.Close()
			return 0, err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	return float64(size) / 1e6 / time.Since(start).Seconds(), nil
}

func seqRead(path string) (float64, error) {
	if err := dropCaches(); err != nil {
		return 0, err
	}
	start := time.Now()
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n, err := io.CopyBuffer(io.Discard, f, make([]byte, 1<<20))
	if err != nil {
		return 0, err
	}
	return float64(n) / 1e6 / time.Since(start).Seconds(), nil
}

func smallFiles(dir string, n int) (float64, error) {
	data := bytes.Repeat([]byte("x"), 4096)
	start := time.Now()
	if err := os.Mkdir(dir, 0o755); err != nil {
		return 0, err
	}
	for i := 0; i < n; i++ {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%05d", i)), data, 0o644); err != nil {
			return 0, err
		}
	}
	for i := 0; i < n; i++ {
		if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("f%05d", i))); err != nil {
			return 0, err
		}
	}
	for i := 0; i < n; i++ {
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("f%05d", i)))
		if err != nil {
			return 0, err
		}
		if len(b) != len(data) {
			return 0, fmt.Errorf("read %d bytes, wrote %d", len(b), len(data))
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// makeTree creates entries entries natively: directories of 10,000 files.
func makeTree(root string, entries int) error {
	for i := 0; i < entries; i++ {
		d := filepath.Join(root, fmt.Sprintf("d%04d", i/10000))
		if i%10000 == 0 {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		f, err := os.Create(filepath.Join(d, fmt.Sprintf("f%05d", i%10000)))
		if err != nil {
			return err
		}
		f.Close()
	}
	return nil
}

func countLines(cmd *exec.Cmd) (int, time.Duration, error) {
	if err := dropCaches(); err != nil {
		return 0, 0, err
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, 0, fmt.Errorf("%v: %w", cmd.Args, err)
	}
	return bytes.Count(out.Bytes(), []byte("\n")), time.Since(start), nil
}

func find(root string, entries int) (float64, error) {
	n, d, err := countLines(exec.Command("find", root))
	if err != nil {
		return 0, err
	}
	if want := entries + (entries+9999)/10000 + 1; n != want {
		return 0, fmt.Errorf("find listed %d entries, want %d", n, want)
	}
	return float64(n) / d.Seconds(), nil
}

func lsl(dir string) (float64, error) {
	n, d, err := countLines(exec.Command("ls", "-l", dir))
	if err != nil {
		return 0, err
	}
	if n < 10000 {
		return 0, fmt.Errorf("ls -l listed %d lines", n)
	}
	return float64(n) / d.Seconds(), nil
}
