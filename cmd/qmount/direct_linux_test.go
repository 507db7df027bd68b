package main

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestDirectReads mounts partition 2 of a GPT image (so the guest's
// device starts 20 MiB into the disk), writes files through the mount,
// empties the host's caches and reads them back: the data comes from
// the image on the host at the places the guest maps (the supervisor's
// log counts the bytes), is right, and the image is clean and holds the
// files afterwards. With --no-direct-read nothing is read that way.
func TestDirectReads(t *testing.T) {
	needVM(t)
	e := newEnv(t)
	img, offs, sizes := e.partitionedImage("two.img")
	rng := rand.New(rand.NewPCG(7, 8))
	files := map[string][]byte{}
	for name, n := range map[string]int{"big": 6<<20 + 321, "mid": 700 << 10, "small": 3000} {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		files[name] = b
	}
	logBytes := regexp.MustCompile(`direct_read_bytes=(\d+)`)
	directBytes := func() int64 {
		m := logBytes.FindAllStringSubmatch(e.lastLog(), -1)
		if len(m) == 0 {
			t.Fatalf("no direct_read_bytes in the log:%s", e.lastLog())
		}
		n, _ := strconv.ParseInt(m[len(m)-1][1], 10, 64)
		return n
	}
	for _, noDirect := range []bool{false, true} {
		args := []string{img + "@2", filepath.Join(e.work, "mp")}
		if noDirect {
			args = append([]string{"--no-direct-read"}, args...)
		}
		mp := strings.TrimSpace(e.mustRun(args...).stdout)
		if !noDirect {
			for name, b := range files {
				if err := os.WriteFile(filepath.Join(mp, name), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
			t.Fatal(err)
		}
		for name, want := range files {
			got, err := os.ReadFile(filepath.Join(mp, name))
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s read back wrong (%d bytes, want %d): %v", name, len(got), len(want), err)
			}
		}
		e.mustRun("unmount", mp)
		e.assertNothingLeft()
		got := directBytes()
		if want := int64(len(files["big"]) + len(files["mid"])); !noDirect && got < want {
			t.Errorf("%d bytes read from the image, want at least %d", got, want)
		}
		if noDirect && got != 0 {
			t.Errorf("--no-direct-read: %d bytes read from the image", got)
		}
		if !noDirect && !strings.Contains(e.lastLog(), "reading file data from the disk where the guest maps it") {
			t.Errorf("the log does not say where file data was read from:%s", e.lastLog())
		}
	}
	part := filepath.Join(e.work, "p2.img")
	dd := exec.Command("dd", "if="+img, "of="+part, "bs=1M", "iflag=skip_bytes,count_bytes",
		"skip="+strconv.FormatInt(offs[1], 10), "count="+strconv.FormatInt(sizes[1], 10), "status=none")
	if out, err := dd.CombinedOutput(); err != nil {
		t.Fatalf("dd: %v %s", err, out)
	}
	fsck(t, part)
	if got := catImage(t, part, "/big"); got != string(files["big"]) {
		t.Errorf("the image's /big differs (%d bytes)", len(got))
	}
}
