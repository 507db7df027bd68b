package client

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestThroughput measures sequential write and cold read of a 512 MiB
// file and ls -l of 10,000 files, on the mount and on the served
// directory. Set QMOUNT_CLIENT_BENCH=1 to run it.
func TestThroughput(t *testing.T) {
	if os.Getenv("QMOUNT_CLIENT_BENCH") == "" {
		t.Skip("set QMOUNT_CLIENT_BENCH=1 to measure throughput")
	}
	data := t.TempDir()
	e := mountEnv(t, data)
	const size = 512 << 20
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	write := func(p string) time.Duration {
		start := time.Now()
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		for n := 0; n < size; n += len(buf) {
			if _, err := f.Write(buf); err != nil {
				t.Fatal(err)
			}
		}
		f.Sync()
		f.Close()
		return time.Since(start)
	}
	read := func(p string) time.Duration {
		dropCaches(t)
		start := time.Now()
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.CopyBuffer(io.Discard, f, buf)
		f.Close()
		if err != nil || n != size {
			t.Fatalf("read %d: %v", n, err)
		}
		return time.Since(start)
	}
	mbs := func(d time.Duration) string { return fmt.Sprintf("%.0f MB/s", float64(size)/d.Seconds()/1e6) }
	s0 := e.m.Client().Stats().ByType
	wm, wn := write(e.path("big")), write(filepath.Join(data, "native"))
	s1 := e.m.Client().Stats().ByType
	t.Logf("write requests: %d Twrite", s1["Twrite"]-s0["Twrite"])
	rm, rn := read(e.path("big")), read(filepath.Join(data, "native"))
	t.Logf("write: mount %s, native %s", mbs(wm), mbs(wn))
	t.Logf("cold read: mount %s, native %s", mbs(rm), mbs(rn))
	os.Remove(filepath.Join(data, "native"))
	os.Mkdir(filepath.Join(data, "many"), 0o755)
	makeFiles(t, filepath.Join(data, "many"), "f", 10000)
	dropCaches(t)
	before := e.requests()
	start := time.Now()
	if err := exec.Command("ls", "-l", e.path("many")).Run(); err != nil {
		t.Fatal(err)
	}
	lm := time.Since(start)
	used := e.requests() - before
	t.Logf("ls stats: %v", e.m.Client().Stats().ByType)
	if os.Getenv("QMOUNT_CLIENT_STRACE") != "" {
		out, _ := exec.Command("strace", "-c", "-f", "ls", "-l", e.path("many")).CombinedOutput()
		t.Logf("strace:\n%s", out[len(out)-min(len(out), 3000):])
	}
	dropCaches(t)
	start = time.Now()
	exec.Command("ls", "-l", filepath.Join(data, "many")).Run()
	t.Logf("ls -l 10,000 files: mount %v (%d requests), native %v", lm, used, time.Since(start))
}
