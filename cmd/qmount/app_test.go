package main

import (
	"slices"
	"testing"
)

func TestWithDefaultCommand(t *testing.T) {
	app := newApp()
	for _, tc := range []struct{ in, want []string }{
		{[]string{"qmount"}, []string{"qmount"}},
		{[]string{"qmount", "disk.img"}, []string{"qmount", "mount", "disk.img"}},
		{[]string{"qmount", "disk.img", "mnt"}, []string{"qmount", "mount", "disk.img", "mnt"}},
		{[]string{"qmount", "--ro", "disk.img"}, []string{"qmount", "mount", "--ro", "disk.img"}},
		{[]string{"qmount", "-v", "disk.img"}, []string{"qmount", "-v", "mount", "disk.img"}},
		{[]string{"qmount", "disk.img", "mnt", "--ro", "-o", "noatime"}, []string{"qmount", "mount", "--ro", "-o", "noatime", "disk.img", "mnt"}},
		{[]string{"qmount", "mount", "disk.img", "-t=ext4"}, []string{"qmount", "mount", "-t=ext4", "disk.img"}},
		{[]string{"qmount", "mount", "--", "-weird.img"}, []string{"qmount", "mount", "--", "-weird.img"}},
		{[]string{"qmount", "status", "--json"}, []string{"qmount", "status", "--json"}},
		{[]string{"qmount", "umount", "mnt"}, []string{"qmount", "umount", "mnt"}},
		{[]string{"qmount", "--help"}, []string{"qmount", "--help"}},
		{[]string{"qmount", "--bogus"}, []string{"qmount", "--bogus"}},
	} {
		if got := withDefaultCommand(app, tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("withDefaultCommand(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
