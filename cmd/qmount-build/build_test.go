package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/qmount/qmount/guests"
	"github.com/qmount/qmount/guests/agent"
	"github.com/qmount/qmount/initramfs"
	"github.com/u-root/u-root/pkg/cpio"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, _ := os.Getwd()
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		if filepath.Dir(dir) == dir {
			t.Fatal("no go.mod above the test")
		}
		dir = filepath.Dir(dir)
	}
}

func staticInit(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "init")
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, "./initramfs/testdata/bootinit")
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building test init: %v: %s", err, b)
	}
	return out
}

func needDebianTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"apt-get", "apt-cache", "dpkg-deb", "xz"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (a Debian host with apt, dpkg, xz-utils is needed)", tool)
		}
	}
}

func TestBuildGuest(t *testing.T) {
	needDebianTools(t)
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	g, err := lookupGuest("linux")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "linux", "amd64")
	cfg := buildConfig{Def: g, Arch: "amd64", Out: out, Cache: filepath.Join(repoRoot(t), "build", "cache"), Init: staticInit(t)}
	m, err := build(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}

	// The manifest matches the files.
	got, err := initramfs.ReadManifest(out)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "linux" || got.Arch != "amd64" || got.Kernel.Format != "vmlinux-pvh" || got.Kernel.PVHEntry == 0 {
		t.Errorf("manifest %+v", got)
	}
	for _, fi := range []initramfs.FileInfo{got.Kernel.FileInfo, *got.Kernel.Compressed, got.Initramfs.FileInfo} {
		d, err := initramfs.Describe(filepath.Join(out, fi.File))
		if err != nil || d != fi {
			t.Errorf("%s: on disk %+v (%v), manifest %+v", fi.File, d, err, fi)
		}
	}
	if got.Kernel.File != "vmlinux" || got.Initramfs.File != "initramfs.cpio" || got.Kernel.Compressed.File != "bzImage" {
		t.Errorf("file names %q %q %q", got.Kernel.File, got.Initramfs.File, got.Kernel.Compressed.File)
	}
	if _, err := os.Stat(filepath.Join(out, "config")); err != nil || got.Kernel.Config != "config" {
		t.Errorf("kernel config not kept: %v", err)
	}
	initInfo, _ := initramfs.Describe(cfg.Init)
	if got.Init.SHA256 != initInfo.SHA256 {
		t.Errorf("manifest init sha %s, file %s", got.Init.SHA256, initInfo.SHA256)
	}
	for _, mod := range []string{"ext4", "crc32c_generic", "virtio_blk", "btrfs", "xfs", "vfat"} {
		if !slices.Contains(got.Initramfs.Modules, mod) {
			t.Errorf("manifest modules lack %s", mod)
		}
	}

	// The guest agent reads the guest info the initramfs carries.
	var infoJSON []byte
	cpioFiles(t, filepath.Join(out, "initramfs.cpio"), func(name string, content func() []byte) {
		if "/"+name == agent.GuestInfoPath {
			infoJSON = content()
		}
	})
	info, err := agent.ParseGuestInfo(infoJSON)
	if err != nil {
		t.Fatalf("guest info %q: %v", infoJSON, err)
	}
	if info.Kernel != got.Kernel.Release || !slices.Contains(info.BootModules, "virtio_blk") {
		t.Errorf("guest info %+v", info)
	}
	if mods := info.ModulesFor("ext4"); !slices.Equal(mods, []string{"crc32c_generic", "ext4"}) {
		t.Errorf("ModulesFor(ext4) = %v", mods)
	}
	if mods := info.ModulesFor("iso9660"); !slices.Equal(mods, []string{"isofs"}) {
		t.Errorf("ModulesFor(iso9660) = %v", mods)
	}

	// Unchanged inputs: nothing rebuilt.
	st, _ := os.Stat(filepath.Join(out, "initramfs.cpio"))
	m2, err := build(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	st2, _ := os.Stat(filepath.Join(out, "initramfs.cpio"))
	if !m2.Built.Equal(m.Built) || !st2.ModTime().Equal(st.ModTime()) {
		t.Error("second build with unchanged inputs rebuilt the initramfs")
	}

	// A changed input (one more module) rebuilds.
	cfg.ExtraModules = []string{"loop"}
	m3, err := build(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if m3.Inputs == m.Inputs || !slices.Contains(m3.Initramfs.Modules, "loop") {
		t.Errorf("changed module list not rebuilt: modules %v", m3.Initramfs.Modules)
	}
}

func TestBuildRefusesBadInit(t *testing.T) {
	needDebianTools(t)
	g, err := lookupGuest("linux")
	if err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(repoRoot(t), "build", "cache")
	log := slog.New(slog.DiscardHandler)
	tests := []struct {
		name, init, want string
	}{
		{"dynamic", "/bin/true", "dynamically linked"},
		{"script", filepath.Join(t.TempDir(), "init.sh"), "bad magic"},
	}
	os.WriteFile(tests[1].init, []byte("#!/bin/sh\n"+strings.Repeat("echo not an ELF binary\n", 8)), 0o755)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := os.Stat(tc.init); err != nil {
				t.Skip(err)
			}
			_, err := build(context.Background(), buildConfig{Def: g, Arch: "amd64", Out: t.TempDir(), Cache: cache, Init: tc.init}, log)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := lookupGuest("nope"); err == nil || !strings.Contains(err.Error(), "linux") {
		t.Errorf("unknown guest: %v", err)
	}
}

// TestBuildLinux612 builds the linux-6.12 guest (Debian's 6.12 cloud
// kernel, modules shipped as .ko.xz) and checks that its initramfs holds
// the ntfs3 module decompressed, and that its guest info loads ntfs3 for
// -t ntfs3.
func TestBuildLinux612(t *testing.T) {
	needDebianTools(t)
	if _, err := exec.LookPath("xz"); err != nil {
		t.Skip("xz not installed (apt-get install xz-utils)")
	}
	d, err := lookupGuest("linux-6.12")
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	m, err := build(context.Background(), buildConfig{Def: d, Arch: "amd64", Out: out, Cache: filepath.Join(repoRoot(t), "build", "cache"), Init: staticInit(t)},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(m.Kernel.Release, "6.12.") || !strings.Contains(m.Kernel.Package, "cloud-amd64") || m.Kernel.PVHEntry == 0 {
		t.Errorf("kernel %+v", m.Kernel)
	}
	if !slices.Contains(m.Initramfs.Modules, "ntfs3") {
		t.Errorf("modules %v lack ntfs3", m.Initramfs.Modules)
	}
	var ntfs3 []byte
	cpioFiles(t, filepath.Join(out, m.Initramfs.File), func(name string, content func() []byte) {
		if strings.HasSuffix(name, ".ko.xz") || strings.HasSuffix(name, ".ko.zst") {
			t.Errorf("compressed module in the initramfs: %s", name)
		}
		if strings.HasSuffix(name, "/ntfs3.ko") {
			ntfs3 = content()
		}
	})
	if !bytes.HasPrefix(ntfs3, []byte("\x7fELF")) {
		t.Fatalf("no uncompressed ntfs3.ko in the initramfs (first bytes %q)", ntfs3[:min(len(ntfs3), 8)])
	}
	info := guestInfoIn(t, filepath.Join(out, m.Initramfs.File))
	if !slices.Equal(info.ModulesFor("ntfs3"), []string{"ntfs3", "nls_utf8"}) {
		t.Errorf("ModulesFor(ntfs3) = %v", info.ModulesFor("ntfs3"))
	}
	g, err := guests.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := g.Def.Driver("ntfs", "ntfs3"); !ok {
		t.Errorf("built definition lacks the ntfs3 driver: %+v", g.Def.Filesystems)
	}
}

// guestInfoIn reads the guest agent's manifest from an initramfs.
func guestInfoIn(t *testing.T, cpioPath string) *agent.GuestInfo {
	t.Helper()
	var info *agent.GuestInfo
	cpioFiles(t, cpioPath, func(name string, content func() []byte) {
		if "/"+name == agent.GuestInfoPath {
			info = new(agent.GuestInfo)
			if err := json.Unmarshal(content(), info); err != nil {
				t.Fatal(err)
			}
		}
	})
	if info == nil {
		t.Fatal("no guest info in the initramfs")
	}
	return info
}

// cpioFiles calls fn for each record of the newc archive at cpioPath;
// content reads the record's data.
func cpioFiles(t *testing.T, cpioPath string, fn func(name string, content func() []byte)) {
	t.Helper()
	data, err := os.ReadFile(cpioPath)
	if err != nil {
		t.Fatal(err)
	}
	rr := cpio.Newc.Reader(bytes.NewReader(data))
	for {
		r, err := rr.ReadRecord()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		fn(r.Name, func() []byte {
			b, _ := io.ReadAll(io.NewSectionReader(r, 0, int64(r.FileSize)))
			return b
		})
	}
}
