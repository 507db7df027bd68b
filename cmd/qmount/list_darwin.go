package main

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
)

var wholeDisk = regexp.MustCompile(`^disk[0-9]+$`)

// systemDisks lists /dev/diskN (whole disks; partitions are found by probe).
func systemDisks() ([]string, error) {
	matches, err := filepath.Glob("/dev/disk*")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range matches {
		if wholeDisk.MatchString(filepath.Base(m)) {
			out = append(out, m)
		}
	}
	sort.Strings(out)
	return out, nil
}

func diskKind(path string) string {
	st, err := os.Stat(path)
	if err != nil || st.Mode()&os.ModeDevice == 0 {
		return "image"
	}
	return "internal"
}

// partitionDevice is the device of partition i of disk: disk4s1.
func partitionDevice(disk string, i int) string { return disk + "s" + itoa(i) }
