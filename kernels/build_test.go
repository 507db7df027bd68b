package kernels

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCheckConfig(t *testing.T) {
	final := []byte(`CONFIG_A=y
CONFIG_B=m
CONFIG_S="-qmount"
# CONFIG_OFF is not set
CONFIG_ON=y
`)
	tests := []struct {
		name, frag, want string
	}{
		{"all there", "# comment\nCONFIG_A=y\nCONFIG_S=\"-qmount\"\n# CONFIG_OFF is not set\n# CONFIG_ABSENT is not set\nCONFIG_GONE=n\n", ""},
		{"dropped", "CONFIG_A=y\nCONFIG_MISSING=y\n", "frag.config:2: CONFIG_MISSING=y, but olddefconfig dropped it"},
		{"other value", "CONFIG_B=y\n", "CONFIG_B=y, but the result has m"},
		{"wanted off", "# CONFIG_ON is not set\n", "CONFIG_ON=y, want it unset"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckConfig(final, []string{"/x/frag.config"}, [][]byte{[]byte(tc.frag)})
			switch {
			case tc.want == "" && err != nil:
				t.Fatal(err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestConfigFragments(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"mini.config", "mini-amd64.config", "other.config"} {
		os.WriteFile(filepath.Join(dir, f), []byte("CONFIG_A=y\n"), 0o644)
	}
	got, err := ConfigFragments([]string{filepath.Join(dir, "mini.config"), filepath.Join(dir, "other.config")}, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(dir, "mini.config"), filepath.Join(dir, "mini-amd64.config"), filepath.Join(dir, "other.config")}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("amd64: %v, want %v", got, want)
	}
	got, _ = ConfigFragments([]string{filepath.Join(dir, "mini.config")}, "arm64")
	if len(got) != 1 {
		t.Errorf("arm64 (no companion): %v", got)
	}
	if _, err := ConfigFragments([]string{filepath.Join(dir, "nope.config")}, "amd64"); err == nil {
		t.Error("missing fragment accepted")
	}
}

// TestConfigureMini applies kernels/configs/mini.config to Debian's
// linux-source-6.1 (tinyconfig + fragments + olddefconfig, no compile) and
// checks that nothing it asks for was dropped, so a config mistake shows
// without the 20-minute build. The source is unpacked into the build cache
// once (make guest GUEST=mini needs it too).
func TestConfigureMini(t *testing.T) {
	needTools(t, "apt-get", "apt-cache", "dpkg-deb", "xz", "make", "gcc", "bison", "flex", "bc", "perl")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	a := apt{log: log}
	const pkg = "linux-source-6.1"
	ver, err := a.sourceVersion(ctx, pkg)
	if err != nil {
		t.Skipf("%s not known to apt: %v", pkg, err)
	}
	src, err := a.kernelSource(ctx, pkg, ver, repoCache(t))
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Dir(repoCache(t)) // build/
	conf := filepath.Join(filepath.Dir(root), "kernels", "configs", "mini.config")
	for _, arch := range []string{"amd64", "arm64"} {
		t.Run(arch, func(t *testing.T) {
			karch, _, cross, err := kernelArch(arch)
			if err != nil {
				t.Fatal(err)
			}
			makeArgs := []string{"ARCH=" + karch}
			if arch != "amd64" {
				// Kconfig asks the compiler what it supports.
				if _, err := exec.LookPath(cross + "gcc"); err != nil {
					t.Skipf("%sgcc not installed (apt-get install gcc-aarch64-linux-gnu)", cross)
				}
				makeArgs = append(makeArgs, "CROSS_COMPILE="+cross)
			}
			frags, err := ConfigFragments([]string{conf}, arch)
			if err != nil {
				t.Fatal(err)
			}
			if len(frags) != 2 {
				t.Fatalf("fragments %v: want mini.config and mini-%s.config", frags, arch)
			}
			var data [][]byte
			for _, f := range frags {
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				data = append(data, b)
			}
			b := &kbuild{log: log, src: src, objDir: t.TempDir(), makeArgs: makeArgs}
			if err := b.configure(ctx, frags, data); err != nil {
				t.Fatal(err)
			}
			final, err := os.ReadFile(filepath.Join(b.objDir, ".config"))
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"CONFIG_NTFS3_FS=y", "CONFIG_EXT4_FS=y", "CONFIG_BTRFS_FS=y", "CONFIG_XFS_FS=y",
				"CONFIG_EXFAT_FS=y", "CONFIG_VFAT_FS=y", "CONFIG_DM_CRYPT=y", "CONFIG_MD_RAID1=y", "CONFIG_VIRTIO_BLK=y",
				"CONFIG_VIRTIO_CONSOLE=y", "CONFIG_VIRTIO_VSOCKETS=y", "CONFIG_FUTEX=y", "# CONFIG_MODULES is not set"} {
				if !strings.Contains(string(final), want+"\n") {
					t.Errorf(".config lacks %q", want)
				}
			}
			if arch == "amd64" && !strings.Contains(string(final), "CONFIG_PVH=y\n") {
				t.Error("amd64 .config lacks CONFIG_PVH=y")
			}
		})
	}
}
