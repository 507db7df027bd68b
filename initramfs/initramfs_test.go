package initramfs

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"
)

func TestBuildArchive(t *testing.T) {
	k := debianKernel(t, "amd64")
	initBin := testInit(t, "amd64")
	extra := filepath.Join(t.TempDir(), "extra")
	if err := os.WriteFile(extra, []byte("extra file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Init:            initBin,
		ModulesDir:      k.ModulesDir,
		Modules:         []string{"ext4", "virtio_blk"},
		OptionalModules: []string{"no_such_module_here"},
		Files: []File{
			{Dst: "etc/qmount/guest.json", Data: []byte(`{"kernel":"x"}`)},
			{Src: extra, Dst: "/etc/extra"},
		},
	}
	var buf bytes.Buffer
	res, err := Build(context.Background(), &buf, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Bytes != int64(buf.Len()) || res.Release != k.Release {
		t.Errorf("result bytes %d (archive %d), release %q (want %q)", res.Bytes, buf.Len(), res.Release, k.Release)
	}
	if !slices.Equal(res.Missing, []string{"no_such_module_here"}) {
		t.Errorf("Missing = %v", res.Missing)
	}
	es := readArchive(t, buf.Bytes())
	if len(es) != res.Records {
		t.Errorf("read %d records, result says %d", len(es), res.Records)
	}
	files := byName(es)

	// Every record's parent directory comes before it, and no name twice.
	seen := map[string]bool{}
	for _, e := range es {
		if seen[e.Name] {
			t.Errorf("%s twice", e.Name)
		}
		if d := path.Dir(e.Name); d != "." && !seen[d] {
			t.Errorf("%s before its directory %s", e.Name, d)
		}
		seen[e.Name] = true
	}

	dev := []struct {
		name         string
		major, minor uint64
	}{{"dev/console", 5, 1}, {"dev/null", 1, 3}}
	for _, d := range dev {
		e, ok := files[d.name]
		if !ok {
			t.Errorf("no %s", d.name)
			continue
		}
		if e.Mode&cpio.S_IFMT != cpio.S_IFCHR || e.Rmajor != d.major || e.Rminor != d.minor {
			t.Errorf("%s: mode %#o rdev %d:%d, want char %d:%d", d.name, e.Mode, e.Rmajor, e.Rminor, d.major, d.minor)
		}
	}
	want, _ := os.ReadFile(initBin)
	if e := files["init"]; e.Mode != cpio.S_IFREG|0o755 || !bytes.Equal(e.Data, want) {
		t.Errorf("init: mode %#o, %d bytes, want 0755 and the %d-byte binary", e.Mode, len(e.Data), len(want))
	}
	if e := files["tmp"]; e.Mode != cpio.S_IFDIR|0o1777 {
		t.Errorf("tmp mode %#o", e.Mode)
	}
	if e := files["etc/qmount/guest.json"]; string(e.Data) != `{"kernel":"x"}` || e.Mode != cpio.S_IFREG|0o644 {
		t.Errorf("guest.json: %q mode %#o", e.Data, e.Mode)
	}
	if e := files["etc/extra"]; string(e.Data) != "extra file\n" || e.Mode != cpio.S_IFREG|0o600 {
		t.Errorf("etc/extra: %q mode %#o", e.Data, e.Mode)
	}

	// Modules: the closure, byte-identical to the tree, and modules.dep.
	base := "lib/modules/" + k.Release + "/"
	for _, name := range []string{"ext4", "jbd2", "mbcache", "crc16", "crc32c_generic", "virtio_blk", "virtio", "virtio_ring"} {
		if !slices.Contains(res.Modules, name) {
			t.Errorf("module %s not shipped (shipped: %v)", name, res.Modules)
		}
	}
	ix, err := LoadModuleIndex(k.ModulesDir)
	if err != nil {
		t.Fatal(err)
	}
	var kos int
	for _, e := range es {
		if !strings.HasSuffix(e.Name, ".ko") {
			continue
		}
		kos++
		src, err := os.ReadFile(filepath.Join(k.ModulesDir, strings.TrimPrefix(e.Name, base)))
		if err != nil || !bytes.Equal(src, e.Data) {
			t.Errorf("%s differs from the kernel's module (%v)", e.Name, err)
		}
	}
	if kos != len(res.Modules) {
		t.Errorf("%d .ko records for %d modules", kos, len(res.Modules))
	}
	dep := string(files[base+"modules.dep"].Data)
	ext4, _ := ix.Module("ext4")
	line, ok := modulesDepLine(dep, ext4.Path)
	if !ok {
		t.Fatalf("modules.dep has no line for %s:\n%s", ext4.Path, dep)
	}
	for _, d := range []string{"jbd2", "mbcache", "crc16", "crc32c_generic"} {
		m, _ := ix.Module(d)
		if !slices.Contains(strings.Fields(line), m.Path) {
			t.Errorf("modules.dep ext4 line %q lacks %s", line, m.Path)
		}
	}
	if sd := string(files[base+"modules.softdep"].Data); !strings.Contains(sd, "softdep ext4 pre: crc32c_generic\n") {
		t.Errorf("modules.softdep lacks ext4's crc32c:\n%s", sd)
	}
	if al := string(files[base+"modules.alias"].Data); !strings.Contains(al, "alias fs-ext4 ext4\n") {
		t.Errorf("modules.alias lacks fs-ext4")
	}
	if b := files[base+"modules.builtin"]; len(b.Data) == 0 {
		t.Error("modules.builtin not shipped")
	}

	// Same inputs, same bytes.
	var again bytes.Buffer
	res2, err := Build(context.Background(), &again, cfg, WithModuleIndex(ix))
	if err != nil {
		t.Fatal(err)
	}
	if res2.SHA256 != res.SHA256 || !bytes.Equal(again.Bytes(), buf.Bytes()) {
		t.Error("two builds of the same config differ")
	}
}

func TestBuildFileAndErrors(t *testing.T) {
	initBin := testInit(t, "amd64")
	dst := filepath.Join(t.TempDir(), "initramfs.cpio")
	res, err := BuildFile(context.Background(), dst, Config{Init: initBin})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(data)) != res.Bytes || len(res.Modules) != 0 {
		t.Errorf("file %d bytes, result %+v", len(data), res)
	}
	names := []string{}
	for _, e := range readArchive(t, data) {
		names = append(names, e.Name)
	}
	for _, want := range []string{"init", "dev/console", "dev/null", "proc", "sys"} {
		if !slices.Contains(names, want) {
			t.Errorf("no %s in %v", want, names)
		}
	}
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(dst), ".*tmp*"))
	if len(matches) != 0 {
		t.Errorf("temporary files left: %v", matches)
	}

	errCases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no init", Config{}, "no init"},
		{"missing init", Config{Init: "/nonexistent/init"}, "no such file"},
		{"modules without dir", Config{Init: initBin, Modules: []string{"ext4"}}, "without a modules directory"},
		{"duplicate file", Config{Init: initBin, Files: []File{{Dst: "init", Data: []byte("x")}}}, "twice"},
		{"escaping path", Config{Init: initBin, Files: []File{{Dst: "../x", Data: []byte("x")}}}, "bad archive path"},
	}
	for _, tc := range errCases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := BuildFile(context.Background(), filepath.Join(t.TempDir(), "x.cpio"), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestTools(t *testing.T) {
	sh, err := filepath.EvalSymlinks("/bin/sh")
	if err != nil {
		t.Skipf("no /bin/sh: %v", err)
	}
	interp, err := ELFInterp(sh, "amd64")
	if err != nil || interp == "" {
		t.Skipf("/bin/sh is not a dynamic amd64 program (%v)", err)
	}
	var buf bytes.Buffer
	res, err := Build(context.Background(), &buf, Config{Init: testInit(t, "amd64"), Tools: []string{sh}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(res.Tools, sh) || !slices.Contains(res.Tools, interp) {
		t.Errorf("tools %v lack %s or its interpreter %s", res.Tools, sh, interp)
	}
	// Unpack and run the shipped shell with the shipped loader and
	// libraries only.
	root := t.TempDir()
	var libDirsSeen []string
	for _, e := range readArchive(t, buf.Bytes()) {
		p := filepath.Join(root, e.Name)
		switch e.Mode & cpio.S_IFMT {
		case cpio.S_IFDIR:
			os.MkdirAll(p, 0o755)
		case cpio.S_IFREG:
			if err := os.WriteFile(p, e.Data, os.FileMode(e.Mode&0o777)); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(e.Name, ".so") {
				libDirsSeen = append(libDirsSeen, filepath.Dir(p))
			}
		case cpio.S_IFLNK:
			target := string(e.Data)
			if path.IsAbs(target) {
				target = filepath.Join(root, target)
			}
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	cmd := exec.Command(filepath.Join(root, interp), "--library-path", strings.Join(libDirsSeen, ":"),
		filepath.Join(root, sh), "-c", "echo shipped-shell-runs")
	cmd.Env = []string{}
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "shipped-shell-runs" {
		t.Fatalf("running the shipped shell: %v: %s", err, out)
	}
}

// TestToolsSysroot resolves a program's libraries inside a sysroot whose
// symlinks are absolute (as in an unpacked Debian package tree).
func TestToolsSysroot(t *testing.T) {
	sh, err := filepath.EvalSymlinks("/bin/sh")
	if err != nil {
		t.Skip("no /bin/sh")
	}
	host, err := toolClosure("", []string{sh})
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	// Copy each file to a "real" location and make the requested path an
	// absolute symlink to it, so host resolution would escape the root.
	for _, p := range host {
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(real)
		if err != nil {
			t.Fatal(err)
		}
		store := "/store" + real
		os.MkdirAll(filepath.Join(root, filepath.Dir(store)), 0o755)
		if err := os.WriteFile(filepath.Join(root, store), data, 0o755); err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755)
		os.Remove(filepath.Join(root, p))
		if err := os.Symlink(store, filepath.Join(root, p)); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	res, err := Build(context.Background(), &buf, Config{Init: testInit(t, "amd64"), ToolRoot: root, Tools: []string{sh}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Tools, host) {
		t.Errorf("sysroot closure %v, host closure %v", res.Tools, host)
	}
	files := byName(readArchive(t, buf.Bytes()))
	for _, p := range host {
		e := files[strings.TrimPrefix(p, "/")]
		want, _ := os.ReadFile(p)
		if e.Mode&cpio.S_IFMT == cpio.S_IFREG && !bytes.Equal(e.Data, want) {
			t.Errorf("%s content differs from the sysroot's", p)
		}
		if e.Mode == 0 {
			t.Errorf("%s missing from the archive", p)
		}
	}
}
