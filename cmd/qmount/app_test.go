package main

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
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

func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		err     error
		code    int
		printed string
	}{
		{nil, 0, ""},
		{errors.New("boom"), 1, "qmount: boom\n"},
		{cli.Exit("", 3), 3, ""},
		{cli.Exit("bad thing", 4), 4, "qmount: bad thing\n"},
		{fmt.Errorf("wrapped: %w", cli.Exit("", 5)), 5, ""},
	} {
		var b strings.Builder
		if got := exitCode(tc.err, &b); got != tc.code || b.String() != tc.printed {
			t.Errorf("exitCode(%v) = %d, printed %q; want %d, %q", tc.err, got, b.String(), tc.code, tc.printed)
		}
	}
}
