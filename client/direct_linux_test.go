package client

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/qmount/qmount/internal/p9ext"
	"github.com/qmount/qmount/p9server"
)

// TestReadMapped checks reading through an extent map: data, holes,
// unwritten extents, the end of the file, and the cases that must fall
// back to 9P.
func TestReadMapped(t *testing.T) {
	dev := bytes.Repeat([]byte("0123456789abcdef"), 64) // 1 KiB device
	d := &directRead{r: bytes.NewReader(dev), size: int64(len(dev))}
	m := &p9ext.ExtentMap{Size: 300, Start: 0, End: 300, Extents: []p9ext.Extent{
		{Logical: 0, Physical: 16, Length: 100},
		{Logical: 150, Physical: 512, Length: 50, Flags: p9ext.ExtentUnwritten},
		{Logical: 200, Physical: 700, Length: 50},
		// 250-300: a hole up to the end
	}}
	want := make([]byte, 300)
	copy(want, dev[16:116])
	copy(want[200:], dev[700:750])
	for _, tc := range []struct {
		off, n int
		ok     bool
		want   []byte
	}{
		{0, 300, true, want},
		{10, 50, true, want[10:60]},
		{90, 80, true, want[90:170]}, // data, hole, unwritten
		{240, 100, true, want[240:]}, // clipped at the end of the file
		{300, 10, true, nil},         // at the end
		{400, 10, true, nil},         // past the end
	} {
		dest := bytes.Repeat([]byte{0xee}, tc.n)
		n, ok := d.readMapped(m, dest, int64(tc.off))
		if ok != tc.ok || !bytes.Equal(dest[:n], tc.want) {
			t.Errorf("read %d at %d: %d bytes, ok %v; want %d, %v", tc.n, tc.off, n, ok, len(tc.want), tc.ok)
		}
	}
	partial := &p9ext.ExtentMap{Size: 300, Start: 100, End: 200, Extents: []p9ext.Extent{{Logical: 100, Physical: 0, Length: 100}}}
	outside := &p9ext.ExtentMap{Size: 300, Start: 0, End: 300, Extents: []p9ext.Extent{{Logical: 0, Physical: 1000, Length: 300}}}
	for name, tc := range map[string]struct {
		m   *p9ext.ExtentMap
		off int
	}{
		"before the map":     {partial, 50},
		"after the map":      {partial, 150},
		"outside the device": {outside, 0},
		"negative offset":    {m, -1},
	} {
		if _, ok := d.readMapped(tc.m, make([]byte, 100), int64(tc.off)); ok {
			t.Errorf("%s: read through the map", name)
		}
	}
}

// TestDirectRead serves a real ext4 and xfs (loop-mounted image) with
// extent maps and reads through a mount that reads data from the image
// file itself: contents match, data did not go through 9P, and changes
// made through the mount (writes, appends, truncates, new files) are
// read back right.
func TestDirectRead(t *testing.T) {
	requireFUSE(t)
	for _, fstype := range []string{"ext4", "xfs"} {
		t.Run(fstype, func(t *testing.T) {
			mkfs, err := exec.LookPath("mkfs." + fstype)
			if err != nil {
				t.Skipf("mkfs.%s not installed", fstype)
			}
			dir := t.TempDir()
			img := filepath.Join(dir, "disk.img")
			if err := os.WriteFile(img, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(img, 320<<20); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(mkfs, "-q", img).CombinedOutput(); err != nil {
				t.Fatalf("mkfs: %v: %s", err, out)
			}
			data := filepath.Join(dir, "fs")
			os.Mkdir(data, 0o755)
			if out, err := exec.Command("mount", "-o", "loop", img, data).CombinedOutput(); err != nil {
				t.Skipf("cannot loop-mount %s here: %v: %s", fstype, err, out)
			}
			t.Cleanup(func() { exec.Command("umount", data).Run() })

			rng := rand.New(rand.NewPCG(1, 2))
			random := func(n int) []byte {
				b := make([]byte, n)
				for i := range b {
					b[i] = byte(rng.Uint32())
				}
				return b
			}
			files := map[string][]byte{
				"big":   random(9<<20 + 123),
				"small": random(1000),
			}
			for name, b := range files {
				if err := os.WriteFile(filepath.Join(data, name), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			// A sparse file: data, a hole, data, and a hole at the end.
			sparse := make([]byte, 6<<20)
			copy(sparse, random(1<<20))
			copy(sparse[3<<20:], random(1<<20))
			f, _ := os.Create(filepath.Join(data, "sparse"))
			f.WriteAt(sparse[:1<<20], 0)
			f.WriteAt(sparse[3<<20:4<<20], 3<<20)
			f.Truncate(6 << 20)
			// Preallocated (unwritten) space with data in its middle.
			pre := make([]byte, 4<<20)
			g, _ := os.Create(filepath.Join(data, "prealloc"))
			if err := unix.Fallocate(int(g.Fd()), 0, 0, int64(len(pre))); err != nil {
				t.Fatal(err)
			}
			copy(pre[1<<20:], random(100000))
			g.WriteAt(pre[1<<20:1<<20+100000], 1<<20)
			f.Close()
			g.Close()
			files["sparse"], files["prealloc"] = sparse, pre

			dev, err := os.Open(img)
			if err != nil {
				t.Fatal(err)
			}
			defer dev.Close()
			e := mountEnvServer(t, data, []p9server.Option{p9server.WithExtentMaps()}, WithDirectRead(dev, 320<<20))
			check := func(when string) {
				t.Helper()
				dropPages(t)
				for name, want := range files {
					got, err := os.ReadFile(e.path(name))
					if err != nil {
						t.Fatalf("%s: %v", when, err)
					}
					if !bytes.Equal(got, want) {
						t.Fatalf("%s: %s read back wrong (%d bytes, want %d)", when, name, len(got), len(want))
					}
				}
			}
			reads := func() uint64 { return e.m.Client().Stats().ByType["Tread"] }
			r0, d0 := reads(), e.m.DirectBytes()
			check("first read")
			if got := e.m.DirectBytes() - d0; got < int64(len(files["big"])) {
				t.Errorf("read %d bytes from the image, want at least the big file's %d", got, len(files["big"]))
			}
			// Maps cost one Tread each (besides the small file's data).
			if n := reads() - r0; n > 8 {
				t.Errorf("%d Treads for 4 files read from the image", n)
			}

			// Changes through the mount are read back.
			w, err := os.OpenFile(e.path("big"), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			patch := random(3 << 20)
			if _, err := w.WriteAt(patch, 7<<20); err != nil {
				t.Fatal(err)
			}
			big := append(files["big"][:7<<20:7<<20], patch...)
			files["big"] = big
			// Read through the mount while it is open for writing.
			dropPages(t)
			if got, _ := os.ReadFile(e.path("big")); !bytes.Equal(got, big) {
				t.Fatal("big read wrong while open for writing")
			}
			w.Close()
			check("after a write that extends the file")

			if err := os.Truncate(e.path("sparse"), 3<<20+100); err != nil {
				t.Fatal(err)
			}
			files["sparse"] = files["sparse"][:3<<20+100]
			nb := random(2 << 20)
			if err := os.WriteFile(e.path("new"), nb, 0o644); err != nil {
				t.Fatal(err)
			}
			files["new"] = nb
			check("after truncate and a new file")
			if e.m.DirectBytes()-d0 < int64(len(big)+len(nb)) {
				t.Errorf("after the changes, files were not read from the image again")
			}
		})
	}
}

// TestDirectReadRefused: a server without extent maps serves everything
// through 9P.
func TestDirectReadRefused(t *testing.T) {
	dev, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	e := mountEnv(t, "", WithDirectRead(dev, 1<<30))
	want := bytes.Repeat([]byte("x"), 1<<20)
	os.WriteFile(filepath.Join(e.data, "f"), want, 0o644)
	if got, err := os.ReadFile(e.path("f")); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read back wrong: %v", err)
	}
	if e.m.DirectBytes() != 0 {
		t.Errorf("read %d bytes from the device of a server without maps", e.m.DirectBytes())
	}
}

// dropPages empties the page cache, so reads reach the file system.
func dropPages(t testing.TB) {
	t.Helper()
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0); err != nil {
		t.Skipf("cannot drop caches: %v", err)
	}
}
