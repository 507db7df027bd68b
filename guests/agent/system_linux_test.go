package agent

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestMountFlags(t *testing.T) {
	for _, tc := range []struct {
		opts      string
		ro        bool
		wantFlags uintptr
		wantData  string
	}{
		{"", false, 0, ""},
		{"", true, unix.MS_RDONLY, ""},
		{"noatime,errors=remount-ro,data=journal", false, unix.MS_NOATIME, "errors=remount-ro,data=journal"},
		{"defaults,nofail,ro", false, unix.MS_RDONLY, ""},
		{"rw", true, unix.MS_RDONLY, ""}, // read-only requests win
		{"ro,rw", false, 0, ""},
		{"nodev,nosuid,noexec,sync,dirsync,lazytime", false,
			unix.MS_NODEV | unix.MS_NOSUID | unix.MS_NOEXEC | unix.MS_SYNCHRONOUS | unix.MS_DIRSYNC | unix.MS_LAZYTIME, ""},
		{"relatime,norelatime, uid=1000 ,,utf8", false, 0, "uid=1000,utf8"},
		{"compress=zstd:3,subvol=@home", false, 0, "compress=zstd:3,subvol=@home"},
	} {
		flags, data := MountFlags(tc.opts, tc.ro)
		if flags != tc.wantFlags || data != tc.wantData {
			t.Errorf("MountFlags(%q, %v) = %#x %q, want %#x %q", tc.opts, tc.ro, flags, data, tc.wantFlags, tc.wantData)
		}
	}
}

func TestBootTimeMS(t *testing.T) {
	a := BootTimeMS()
	b := BootTimeMS()
	if a <= 0 || b < a {
		t.Errorf("BootTimeMS went %d then %d", a, b)
	}
}
