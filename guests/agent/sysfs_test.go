package agent

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// writeTree creates files (path -> content) under root.
func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFindPorts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  map[string]string
	}{
		{"no class dir", nil, map[string]string{}},
		{"two named ports and an unnamed one", map[string]string{
			"class/virtio-ports/vport1p1/name": "qmount.ctl\n",
			"class/virtio-ports/vport1p2/name": "qmount.9p\n",
			"class/virtio-ports/vport2p0/name": "\n",
			"class/virtio-ports/vport2p0/dev":  "250:0\n",
		}, map[string]string{"qmount.ctl": "/dev/vport1p1", "qmount.9p": "/dev/vport1p2"}},
		{"port without name file", map[string]string{"class/virtio-ports/vport0p1/dev": "250:1\n"}, map[string]string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			writeTree(t, root, tc.files)
			got, err := FindPorts(root, "/dev")
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, tc.want) {
				t.Errorf("FindPorts = %v, want %v", got, tc.want)
			}
		})
	}
}

// A sysfs tree shaped like a guest's with two virtio disks, the first
// partitioned, plus a device without a serial.
var fakeBlock = map[string]string{
	"block/vda/serial":                  "qmount0\n",
	"block/vda/size":                    "131072\n",
	"block/vda/vda1/partition":          "1\n",
	"block/vda/vda2/partition":          "2\n",
	"block/vda/queue/rotational":        "1\n",
	"block/vdb/serial":                  "qmount1",
	"block/vdb/size":                    "2048\n",
	"block/loop0/size":                  "0\n",
	"block/nvme0n1/serial":              "qmount2\n",
	"block/nvme0n1/nvme0n1p1/partition": "1\n",
}

func TestFindDiskAndPartition(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, fakeBlock)
	for _, tc := range []struct {
		serial string
		part   int
		want   string
		found  bool
	}{
		{"qmount0", 0, "vda", true},
		{"qmount0", 1, "vda1", true},
		{"qmount0", 2, "vda2", true},
		{"qmount0", 3, "", false},
		{"qmount1", 0, "vdb", true},
		{"qmount2", 1, "nvme0n1p1", true},
		{"qmount9", 0, "", false},
	} {
		disk, ok, err := FindDiskBySerial(root, tc.serial)
		if err != nil {
			t.Fatal(err)
		}
		got := disk
		if ok && tc.part > 0 {
			got, ok, err = FindPartition(root, disk, tc.part)
			if err != nil {
				t.Fatal(err)
			}
		}
		if ok != tc.found || (ok && got != tc.want) {
			t.Errorf("%s part %d: %q %v, want %q %v", tc.serial, tc.part, got, ok, tc.want, tc.found)
		}
	}
}

func TestSysfsDisksWaits(t *testing.T) {
	sys, dev := t.TempDir(), t.TempDir()
	d := SysfsDisks{SysRoot: sys, DevRoot: dev, Timeout: 10 * time.Second}
	// The disk, its partition and its node show up a little later, as
	// when virtio_blk probes after the request arrived.
	go func() {
		time.Sleep(30 * time.Millisecond)
		writeTree(t, sys, map[string]string{"block/vda/serial": "qmount0\n"})
		time.Sleep(30 * time.Millisecond)
		writeTree(t, sys, map[string]string{"block/vda/vda1/partition": "1\n"})
		time.Sleep(30 * time.Millisecond)
		writeTree(t, dev, map[string]string{"vda1": ""})
	}()
	got, err := d.Find(context.Background(), "qmount0", 1)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dev, "vda1"); got != want {
		t.Errorf("Find = %q, want %q", got, want)
	}

	// A disk that never comes: a timeout error naming it.
	d.Timeout = 50 * time.Millisecond
	if _, err := d.Find(context.Background(), "qmount5", 0); err == nil || !strings.Contains(err.Error(), "disk qmount5") {
		t.Errorf("missing disk: %v", err)
	}
	// Cancellation ends the wait.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d.Timeout = time.Hour
	if _, err := d.Find(ctx, "qmount5", 0); err == nil {
		t.Error("canceled: no error")
	}
}

func TestRegion(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{
		"class/block/vda/size":       "2097152\n",
		"class/block/vda1/size":      "1024000\n",
		"class/block/vda1/start":     "2048\n",
		"class/block/vda1/partition": "1\n",
		"class/block/vdb1/partition": "1\n", // no size
		"class/block/vdc1/size":      "8\n",
		"class/block/vdc1/start":     "x\n",
		"class/block/vdc1/partition": "1\n",
		"fs/ext4/vda1/options":       "rw\nbsddf\ndata=ordered\n",
		"fs/ext4/vdb1/options":       "rw\ndata=journal\n",
	})
	d := SysfsDisks{SysRoot: root}
	for _, tc := range []struct {
		dev       string
		off, size int64
		ok        bool
	}{
		{"/dev/vda", 0, 2097152 * 512, true},
		{"/dev/vda1", 2048 * 512, 1024000 * 512, true},
		{"/dev/vdb1", 0, 0, false},
		{"/dev/vdc1", 0, 0, false},
		{"/dev/vdz", 0, 0, false},
	} {
		off, size, err := d.Region(tc.dev)
		if (err == nil) != tc.ok || off != tc.off || size != tc.size {
			t.Errorf("Region(%s) = %d, %d, %v; want %d, %d, ok %v", tc.dev, off, size, err, tc.off, tc.size, tc.ok)
		}
	}
	if o, err := ext4Options(root, "/dev/vdb1"); err != nil || !slices.Contains(o, "data=journal") {
		t.Errorf("ext4Options(vdb1) = %v, %v", o, err)
	}
	if _, err := ext4Options(root, "/dev/vdq"); err == nil {
		t.Error("ext4Options of an unknown device succeeded")
	}
}
