package guests

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/qmount/qmount/initramfs"
)

// writeBuilt lays out a built guest for d in root/NAME/ARCH the way
// qmount-build does: manifest.json, the kernel and initramfs files it
// names, and the definition as built (without the drivers in drop,
// "fstype/type"). It returns the guest as Load reads it.
func writeBuilt(t *testing.T, root string, d *Def, arch string, drop ...string) *Built {
	t.Helper()
	dir := filepath.Join(root, d.Name, arch)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	m := &initramfs.Manifest{Name: d.Name, Arch: arch}
	m.Kernel.File = "vmlinux"
	m.Initramfs.File = "initramfs.cpio"
	for _, f := range []string{m.Kernel.File, m.Initramfs.File} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := initramfs.WriteManifest(dir, m); err != nil {
		t.Fatal(err)
	}
	built := *d
	built.Filesystems = map[string]Drivers{}
	for fs, ds := range d.Filesystems {
		for _, dr := range ds {
			if !slices.Contains(drop, fs+"/"+dr.Type) {
				built.Filesystems[fs] = append(built.Filesystems[fs], dr)
			}
		}
	}
	b, err := json.Marshal(&built)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, DefFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	g, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestSelect runs selection over the shipped definitions (with boot times
// fixed here, so that the table does not follow new measurements) and
// guests built into a temporary root.
func TestSelect(t *testing.T) {
	defs, err := ShippedDefs()
	if err != nil {
		t.Fatal(err)
	}
	boot := map[string]map[string]int{
		"linux":      {"amd64": 3000, "arm64": 2100},
		"linux-6.12": {"amd64": 3200, "arm64": 2300},
		"mini":       {"amd64": 2000},
	}
	for _, d := range defs {
		d.BootMS = boot[d.Name]
	}
	def := func(name string) *Def {
		for _, d := range defs {
			if d.Name == name {
				return d
			}
		}
		t.Fatalf("no shipped %s", name)
		return nil
	}

	type want struct {
		guest, fstype string
		fuse          bool
		// err: a substring of the error; notBuilt: the guest it says to build.
		err, notBuilt string
	}
	tests := []struct {
		name   string
		fstype string
		opts   SelectOptions
		built  []string // NAME/ARCH, or NAME/ARCH-ntfs3g for linux without ntfs-3g
		want   want
	}{
		{"ext4 default guest", "ext4", SelectOptions{}, []string{"linux/amd64"}, want{guest: "linux", fstype: "ext4"}},
		{"ext4 fastest built wins", "ext4", SelectOptions{}, []string{"linux/amd64", "linux-6.12/amd64", "mini/amd64"}, want{guest: "mini", fstype: "ext4"}},
		{"ext4 default before slower", "ext4", SelectOptions{}, []string{"linux/amd64", "linux-6.12/amd64"}, want{guest: "linux", fstype: "ext4"}},
		{"ext4 only 6.12 built", "ext4", SelectOptions{}, []string{"linux-6.12/amd64"}, want{guest: "linux-6.12", fstype: "ext4"}},
		{"ext4 nothing built", "ext4", SelectOptions{}, nil, want{notBuilt: "linux"}},
		{"ext4 other arch built only", "ext4", SelectOptions{}, []string{"linux/arm64"}, want{notBuilt: "linux"}},
		{"ext3 through ext4's driver", "ext3", SelectOptions{}, []string{"linux/amd64"}, want{guest: "linux", fstype: "ext3"}},
		{"ntfs default driver is ntfs-3g", "ntfs", SelectOptions{}, []string{"linux/amd64", "linux-6.12/amd64", "mini/amd64"}, want{guest: "linux", fstype: "ntfs-3g", fuse: true}},
		{"ntfs -t ntfs3", "ntfs", SelectOptions{ExplicitType: "ntfs3"}, []string{"linux/amd64", "linux-6.12/amd64"}, want{guest: "linux-6.12", fstype: "ntfs3"}},
		{"ntfs -t ntfs3 mini faster", "ntfs", SelectOptions{ExplicitType: "ntfs3"}, []string{"linux/amd64", "linux-6.12/amd64", "mini/amd64"}, want{guest: "mini", fstype: "ntfs3"}},
		{"ntfs -t ntfs3 not built", "ntfs", SelectOptions{ExplicitType: "ntfs3"}, []string{"linux/amd64"}, want{notBuilt: "linux-6.12"}},
		{"-t ntfs3 undetected fs", "", SelectOptions{ExplicitType: "ntfs3"}, []string{"linux/amd64", "linux-6.12/amd64"}, want{guest: "linux-6.12", fstype: "ntfs3"}},
		{"-t ntfs-3g", "ntfs", SelectOptions{ExplicitType: "ntfs-3g"}, []string{"linux/amd64", "linux-6.12/amd64"}, want{guest: "linux", fstype: "ntfs-3g", fuse: true}},
		{"ntfs without ntfs-3g falls back to ntfs3", "ntfs", SelectOptions{}, []string{"linux/amd64-ntfs3g", "linux-6.12/amd64"}, want{guest: "linux-6.12", fstype: "ntfs3"}},
		{"ntfs without ntfs-3g nothing else", "ntfs", SelectOptions{}, []string{"linux/amd64-ntfs3g"}, want{notBuilt: "linux", err: "built without the driver"}},
		{"-t ntfs-3g lacking", "ntfs", SelectOptions{ExplicitType: "ntfs-3g"}, []string{"linux/amd64-ntfs3g", "linux-6.12/amd64"}, want{notBuilt: "linux"}},
		{"-t ext4 on ext4", "ext4", SelectOptions{ExplicitType: "ext4"}, []string{"linux/amd64", "mini/amd64"}, want{guest: "mini", fstype: "ext4"}},
		{"-t unknown", "ext4", SelectOptions{ExplicitType: "minix"}, []string{"linux/amd64"}, want{err: "no guest has a driver of type minix"}},
		{"fs no guest serves", "hfsplus", SelectOptions{}, []string{"linux/amd64"}, want{err: "no guest serves hfsplus"}},
		{"unknown fs default guest", "", SelectOptions{}, []string{"linux/amd64", "mini/amd64"}, want{guest: "linux", fstype: ""}},
		{"unknown fs default not built", "", SelectOptions{}, []string{"mini/amd64"}, want{notBuilt: "linux"}},
		{"read-only driver still chosen", "iso9660", SelectOptions{ReadWrite: true}, []string{"linux/amd64", "mini/amd64"}, want{guest: "linux", fstype: "iso9660"}},
		{"--guest", "ext4", SelectOptions{Guest: "linux-6.12"}, []string{"linux/amd64", "linux-6.12/amd64", "mini/amd64"}, want{guest: "linux-6.12", fstype: "ext4"}},
		{"--guest ntfs picks its driver", "ntfs", SelectOptions{Guest: "mini"}, []string{"linux/amd64", "mini/amd64"}, want{guest: "mini", fstype: "ntfs3"}},
		{"--guest not built", "ext4", SelectOptions{Guest: "mini"}, []string{"linux/amd64"}, want{notBuilt: "mini", err: "compiles a kernel"}},
		{"--guest unknown", "ext4", SelectOptions{Guest: "nope"}, []string{"linux/amd64"}, want{err: `unknown guest "nope"`}},
		{"--guest fs it lacks", "jfs", SelectOptions{Guest: "mini"}, []string{"mini/amd64"}, want{err: "guest mini does not serve jfs"}},
		{"--guest -t unlisted passes", "minix", SelectOptions{Guest: "linux", ExplicitType: "minix"}, []string{"linux/amd64"}, want{guest: "linux", fstype: "minix"}},
		{"--guest no fs", "", SelectOptions{Guest: "mini"}, []string{"mini/amd64"}, want{guest: "mini", fstype: ""}},
		{"arm64 ext4", "ext4", SelectOptions{Arch: "arm64"}, []string{"linux/arm64", "mini/amd64", "linux-6.12/arm64"}, want{guest: "linux", fstype: "ext4"}},
		{"arm64 -t ntfs3", "ntfs", SelectOptions{Arch: "arm64", ExplicitType: "ntfs3"}, []string{"linux/arm64", "linux-6.12/arm64", "mini/amd64"}, want{guest: "linux-6.12", fstype: "ntfs3"}},
		{"ntfs prefers the storage guest", "ntfs", SelectOptions{}, []string{"linux/amd64", "linux-storage/amd64"}, want{guest: "linux-storage", fstype: "ntfs-3g", fuse: true}},
		{"ntfs -t ntfs3 not the storage guest", "ntfs", SelectOptions{ExplicitType: "ntfs3"}, []string{"linux-storage/amd64", "linux-6.12/amd64"}, want{guest: "linux-6.12", fstype: "ntfs3"}},
		{"luks needs the storage guest", "", SelectOptions{Containers: []string{"crypto_LUKS"}}, []string{"linux/amd64", "linux-storage/amd64", "mini/amd64"}, want{guest: "linux-storage", fstype: ""}},
		{"bitlocker needs the storage guest", "", SelectOptions{Containers: []string{"BitLocker"}}, []string{"linux-storage/amd64"}, want{guest: "linux-storage", fstype: ""}},
		{"lvm needs the storage guest", "", SelectOptions{Containers: []string{"LVM2_member"}, Disks: 2}, []string{"linux/amd64", "linux-storage/amd64"}, want{guest: "linux-storage", fstype: ""}},
		{"md needs the storage guest", "", SelectOptions{Containers: []string{"linux_raid_member"}}, []string{"linux/amd64", "linux-storage/amd64"}, want{guest: "linux-storage", fstype: ""}},
		{"luks storage guest not built", "", SelectOptions{Containers: []string{"crypto_LUKS"}}, []string{"linux/amd64", "linux-6.12/amd64"}, want{notBuilt: "linux-storage", err: "a LUKS container"}},
		{"lvm storage guest only arm64", "", SelectOptions{Containers: []string{"LVM2_member"}}, []string{"linux-storage/arm64"}, want{notBuilt: "linux-storage"}},
		{"multi-disk btrfs", "btrfs", SelectOptions{Disks: 2}, []string{"linux/amd64", "mini/amd64", "linux-storage/amd64"}, want{guest: "linux-storage", fstype: "btrfs"}},
		{"multi-disk not built", "btrfs", SelectOptions{Disks: 2}, []string{"linux/amd64"}, want{notBuilt: "linux-storage", err: "over 2 disks"}},
		{"qcow2 image", "", SelectOptions{Unprobed: true}, []string{"linux/amd64", "linux-storage/amd64"}, want{guest: "linux-storage", fstype: ""}},
		{"--guest overrides storage", "", SelectOptions{Guest: "linux", Containers: []string{"crypto_LUKS"}}, []string{"linux/amd64", "linux-storage/amd64"}, want{guest: "linux", fstype: ""}},
		{"ext4 single disk not the storage guest", "ext4", SelectOptions{Disks: 1}, []string{"linux/amd64", "linux-storage/amd64"}, want{guest: "linux", fstype: "ext4"}},
		{"arm64 -t ntfs3 only amd64 built", "ntfs", SelectOptions{Arch: "arm64", ExplicitType: "ntfs3"}, []string{"linux-6.12/amd64"}, want{notBuilt: "linux-6.12", err: "ARCH=arm64"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.opts.Arch == "arm64" && HostArch() == "arm64" && strings.Contains(tc.want.err, "ARCH=") {
				t.Skip("the ARCH= hint is only given for a foreign architecture")
			}
			if tc.opts.Arch == "" && HostArch() != "amd64" {
				tc.opts.Arch = "amd64"
			}
			root := t.TempDir()
			cat := &Catalogue{Defs: defs, Built: map[string]*Built{}}
			for _, b := range tc.built {
				name, arch, _ := strings.Cut(b, "/")
				var drop []string
				if a, ok := strings.CutSuffix(arch, "-ntfs3g"); ok {
					arch, drop = a, []string{"ntfs/ntfs-3g"}
				}
				cat.Built[Key(name, arch)] = writeBuilt(t, root, def(name), arch, drop...)
			}
			ch, err := Select(tc.fstype, tc.opts, cat)
			w := tc.want
			if w.notBuilt != "" {
				var nb *NotBuiltError
				if !errors.As(err, &nb) || !errors.Is(err, ErrNotBuilt) {
					t.Fatalf("Select = %+v, %v; want a NotBuiltError", ch, err)
				}
				if nb.Guests[0].Name != w.notBuilt || !strings.Contains(err.Error(), "make guest GUEST="+w.notBuilt) {
					t.Errorf("error %q suggests %s, want %s", err, nb.Guests[0].Name, w.notBuilt)
				}
			}
			if w.err != "" && (err == nil || !strings.Contains(err.Error(), w.err)) {
				t.Fatalf("Select = %+v, %v; want an error with %q", ch, err, w.err)
			}
			if w.err != "" || w.notBuilt != "" {
				return
			}
			if err != nil {
				t.Fatalf("Select: %v", err)
			}
			arch := tc.opts.Arch
			if arch == "" {
				arch = HostArch()
			}
			if ch.Def.Name != w.guest || ch.Built == nil || ch.Built.Name != w.guest || ch.Built.Arch != arch || ch.FSType != w.fstype || ch.Driver.FUSE != w.fuse {
				t.Errorf("Select = guest %s (built %+v) type %q driver %+v; want %s %q fuse=%v", ch.Def.Name, ch.Built, ch.FSType, ch.Driver, w.guest, w.fstype, w.fuse)
			}
			if ch.Reason == "" {
				t.Error("no reason given")
			}
		})
	}
}

// TestLoadCatalogue finds built guests through $QMOUNT_GUESTS and user
// definitions through $QMOUNT_GUEST_DEFS.
func TestLoadCatalogue(t *testing.T) {
	defsDir, root := t.TempDir(), t.TempDir()
	writeDef(t, defsDir, "custom", customDef)
	t.Setenv(EnvDefs, defsDir)
	t.Setenv(EnvDirs, root)
	d, err := ParseDef([]byte(customDef))
	if err != nil {
		t.Fatal(err)
	}
	writeBuilt(t, root, d, "amd64")
	// A broken build is reported, not fatal.
	os.MkdirAll(filepath.Join(root, "linux", "amd64"), 0o755)
	os.WriteFile(filepath.Join(root, "linux", "amd64", initramfs.ManifestName), []byte("{"), 0o644)

	cat, err := LoadCatalogue()
	if err != nil {
		t.Fatal(err)
	}
	if cat.Def("custom") == nil || cat.Def("mini") == nil {
		t.Fatalf("defs %v", cat.Defs)
	}
	if b := cat.Built[Key("custom", "amd64")]; b == nil || b.Def == nil || b.Def.BootMS["amd64"] != 1500 {
		t.Errorf("custom not found built: %+v", b)
	}
	if len(cat.Problems) != 1 || !strings.Contains(cat.Problems[0].Error(), "manifest") {
		t.Errorf("problems %v", cat.Problems)
	}
	if h := BuildHint(cat.Def("custom"), "amd64"); !strings.Contains(h, "qmount-build guest --defs "+defsDir+" --name custom --arch amd64") {
		t.Errorf("build hint for a user guest: %s", h)
	}
	// The custom guest boots fastest and serves ext4.
	ch, err := Select("ext4", SelectOptions{Arch: "amd64"}, cat)
	if err != nil || ch.Def.Name != "custom" {
		t.Errorf("Select = %+v, %v", ch, err)
	}
}
