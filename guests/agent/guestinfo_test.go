package agent

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

const sampleGuestInfo = `{"kernel":"6.1.0-31-amd64",
 "boot_modules":["virtio_mmio","virtio_blk","virtio_console","vmw_vsock_virtio_transport"],
 "fs_modules":{"ext4":["crc32c_generic","ext4"],"vfat":["nls_cp437","nls_utf8","vfat"],"btrfs":["btrfs"]}}`

func TestGuestInfoModules(t *testing.T) {
	g, err := ParseGuestInfo([]byte(sampleGuestInfo))
	if err != nil {
		t.Fatal(err)
	}
	if g.Kernel != "6.1.0-31-amd64" {
		t.Errorf("kernel %q", g.Kernel)
	}
	for _, tc := range []struct {
		fstype string
		want   []string
	}{
		{"ext4", []string{"crc32c_generic", "ext4"}},
		{"vfat", []string{"nls_cp437", "nls_utf8", "vfat"}},
		{"xfs", []string{"xfs"}}, // not listed: the module named like the type
		{"", nil},
	} {
		if got := g.ModulesFor(tc.fstype); !slices.Equal(got, tc.want) {
			t.Errorf("ModulesFor(%q) = %v, want %v", tc.fstype, got, tc.want)
		}
	}
	// The result is a copy: changing it leaves the manifest alone.
	g.ModulesFor("ext4")[0] = "x"
	if g.FSModules["ext4"][0] != "crc32c_generic" {
		t.Error("ModulesFor returned the manifest's own slice")
	}
	if got, want := g.AllFSModules(), []string{"btrfs", "crc32c_generic", "ext4", "nls_cp437", "nls_utf8", "vfat"}; !slices.Equal(got, want) {
		t.Errorf("AllFSModules = %v, want %v", got, want)
	}
	var nilInfo *GuestInfo
	if got := nilInfo.ModulesFor("ext4"); !slices.Equal(got, []string{"ext4"}) {
		t.Errorf("nil ModulesFor = %v", got)
	}
}

func TestBootModuleList(t *testing.T) {
	g, err := ParseGuestInfo([]byte(sampleGuestInfo))
	if err != nil {
		t.Fatal(err)
	}
	base := []string{"virtio_mmio", "virtio_blk", "virtio_console", "vmw_vsock_virtio_transport"}
	for _, tc := range []struct {
		extra string
		want  []string
	}{
		{"", base},
		{"ext4,crc32c_generic", append(slices.Clone(base), "ext4", "crc32c_generic")},
		{" ext4 ,,virtio-blk,ext4", append(slices.Clone(base), "ext4")}, // '-' and '_' alike, duplicates out
	} {
		if got := g.BootModuleList(tc.extra); !slices.Equal(got, tc.want) {
			t.Errorf("BootModuleList(%q) = %v, want %v", tc.extra, got, tc.want)
		}
	}
	var nilInfo *GuestInfo
	if got := nilInfo.BootModuleList("a,b"); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("nil BootModuleList = %v", got)
	}
}

func TestReadGuestInfo(t *testing.T) {
	dir := t.TempDir()
	g, err := ReadGuestInfo(filepath.Join(dir, "missing.json"))
	if err != nil || g == nil || len(g.BootModules) != 0 {
		t.Fatalf("missing file: %v, %v", g, err)
	}
	p := filepath.Join(dir, "guest.json")
	if err := os.WriteFile(p, []byte(sampleGuestInfo), 0o644); err != nil {
		t.Fatal(err)
	}
	if g, err = ReadGuestInfo(p); err != nil || len(g.FSModules) != 3 {
		t.Fatalf("ReadGuestInfo = %+v, %v", g, err)
	}
	if err := os.WriteFile(p, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadGuestInfo(p); err == nil {
		t.Error("bad JSON: no error")
	}
}
