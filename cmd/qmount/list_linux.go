package main

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// systemDisks lists the whole-disk block devices of this machine from
// /sys/class/block, skipping partitions, empty loop devices and RAM disks.
func systemDisks() ([]string, error) {
	entries, err := os.ReadDir("/sys/class/block")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		name := e.Name()
		sys := filepath.Join("/sys/class/block", name)
		if _, err := os.Stat(filepath.Join(sys, "partition")); err == nil {
			continue
		}
		if strings.HasPrefix(name, "ram") || strings.HasPrefix(name, "zram") {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(sys, "size")); err != nil || strings.TrimSpace(string(b)) == "0" {
			continue
		}
		out = append(out, "/dev/"+name)
	}
	sort.Strings(out)
	return out, nil
}

// diskKind says whether path is an image file or a device, and for a
// device whether it is removable (external) or not.
func diskKind(path string) string {
	st, err := os.Stat(path)
	if err != nil || st.Mode()&os.ModeDevice == 0 {
		return "image"
	}
	if b, err := os.ReadFile(filepath.Join("/sys/class/block", filepath.Base(path), "removable")); err == nil && strings.TrimSpace(string(b)) == "1" {
		return "external"
	}
	return "internal"
}

// partitionDevice is the device of partition i of disk: sda1, nvme0n1p1.
func partitionDevice(disk string, i int) string {
	if last := disk[len(disk)-1]; last >= '0' && last <= '9' {
		return disk + "p" + itoa(i)
	}
	return disk + itoa(i)
}
