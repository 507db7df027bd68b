package supervisor

import (
	"strings"
	"testing"
)

func TestValidateOptions(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    string
		ro      bool
		wantErr string
	}{
		{in: "", want: ""},
		{in: "ro", want: "ro", ro: true},
		{in: "subvol=@home,compress=zstd", want: "subvol=@home,compress=zstd"},
		{in: "noatime,,ro,", want: "noatime,ro", ro: true},
		{in: "ro,rw", want: "ro,rw", ro: false},
		{in: ",,,", wantErr: "name no option"},
		{in: "a\nb", wantErr: "control character"},
		{in: "a\x00b", wantErr: "control character"},
		{in: "a b", wantErr: "no spaces"},
		{in: "=x", wantErr: "no name"},
		{in: strings.Repeat("a", MaxOptionsLen+1), wantErr: "too long"},
		{in: "\xff", wantErr: "UTF-8"},
	} {
		got, ro, err := ValidateOptions(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ValidateOptions(%q) = %v, want error with %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want || ro != tc.ro {
			t.Errorf("ValidateOptions(%q) = %q, %v, %v; want %q, %v", tc.in, got, ro, err, tc.want, tc.ro)
		}
	}
}

func TestValidateFSType(t *testing.T) {
	mods := []string{"ext4", "isofs", "mycustomfs"}
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"", true}, {"ext4", true}, {"ntfs3", true}, {"mycustomfs", true}, {"vfat", true},
		{"bogusfs", false}, {"ext4,ro", false}, {"EXT4", false}, {"a b", false},
		{strings.Repeat("x", 40), false}, {"ext4\n", false},
	} {
		err := ValidateFSType(tc.in, mods)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateFSType(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("ValidateFSType(%q) error has several lines: %q", tc.in, err)
		}
	}
}

func TestMountName(t *testing.T) {
	for _, tc := range []struct{ label, disk, want string }{
		{"DATA", "/x/disk.img", "DATA"},
		{"", "/x/disk.img", "disk"},
		{"", "/dev/sdb1", "sdb1"},
		{"a/b", "/x/d.img", "a_b"},
		{"Fotos été", "/x/d.img", "Fotos été"},
		{"日本語", "/x/d.img", "日本語"},
		{"  .. ", "/x/d.img", "d"},
		{"/", "/x/d.img", "d"},
		{"\xff\xfe", "/x/d.img", "d"},
		{"tab\there", "/x/d.img", "tab_here"},
		{"-rf", "/x/d.img", "rf"},
		{"", "/x/.img", "img"},
		{"", "/", "disk"},
	} {
		if got := MountName(tc.label, tc.disk); got != tc.want {
			t.Errorf("MountName(%q, %q) = %q, want %q", tc.label, tc.disk, got, tc.want)
		}
	}
}

func TestUniqueName(t *testing.T) {
	taken := map[string]bool{"a": true, "a 2": true}
	if got := uniqueName("a", func(n string) bool { return taken[n] }); got != "a 3" {
		t.Errorf("uniqueName = %q, want %q", got, "a 3")
	}
	if got := uniqueName("b", func(n string) bool { return taken[n] }); got != "b" {
		t.Errorf("uniqueName = %q, want b", got)
	}
}
