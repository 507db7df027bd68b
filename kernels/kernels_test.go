package kernels

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// repoCache is the build cache that `make guests` fills, so the tests reuse
// the kernels the build downloaded.
func repoCache(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "build", "cache")
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test directory")
		}
		dir = parent
	}
}

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install %s)", tool, toolPackage(tool))
		}
	}
}

// fetchOrSkip returns the cached Debian kernel for arch, fetching it if
// needed. Fetching arm64 on a fresh host needs root (dpkg --add-architecture).
func fetchOrSkip(t *testing.T, arch string) *Kernel {
	t.Helper()
	needTools(t, "apt-get", "apt-cache", "dpkg-deb", "xz", "zstd")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	k, err := Fetch(ctx, Config{Arch: arch, CacheDir: repoCache(t)})
	if err != nil {
		if os.Geteuid() != 0 && arch != "amd64" {
			t.Skipf("fetching the %s kernel needs root for dpkg --add-architecture: %v", arch, err)
		}
		t.Fatalf("Fetch(%s): %v", arch, err)
	}
	return k
}

func compressWith(t *testing.T, data []byte, name string, args ...string) []byte {
	t.Helper()
	needTools(t, name)
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return out
}

// fakeBzImage wraps payload in a minimal bzImage: boot sector, one setup
// sector with the HdrS header, then the protected-mode part holding the
// payload at a non-zero offset.
func fakeBzImage(payload []byte) []byte {
	const setupSects = 1
	bz := make([]byte, (setupSects+1)*512+64)
	bz[bzSetupSects] = setupSects
	copy(bz[bzHeaderMagic:], "HdrS")
	binary.LittleEndian.PutUint16(bz[bzVersion:], 0x20f)
	binary.LittleEndian.PutUint32(bz[bzPayloadOffset:], 64)
	binary.LittleEndian.PutUint32(bz[bzPayloadLength:], uint32(len(payload)))
	bz = append(bz, payload...)
	return append(bz, make([]byte, 100)...) // trailing data, as in real images
}

func sizeAppend(b []byte, n int) []byte {
	return binary.LittleEndian.AppendUint32(bytes.Clone(b), uint32(n))
}

func TestExtractVmlinuxCompressions(t *testing.T) {
	// A real ELF file stands in for vmlinux.
	elfData, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Skipf("no /bin/true to use as an ELF: %v", err)
	}
	tests := []struct {
		name    string
		payload func(t *testing.T) []byte
		want    Compression
	}{
		{"gzip", func(t *testing.T) []byte { return compressWith(t, elfData, "gzip", "-n", "-9") }, Gzip},
		{"xz-bcj", func(t *testing.T) []byte {
			return sizeAppend(compressWith(t, elfData, "xz", "--check=crc32", "--x86", "--lzma2=dict=1MiB"), len(elfData))
		}, XZ},
		{"zstd", func(t *testing.T) []byte {
			return sizeAppend(compressWith(t, elfData, "zstd", "-19", "-q"), len(elfData))
		}, Zstd},
		{"lzma", func(t *testing.T) []byte {
			return sizeAppend(compressWith(t, elfData, "xz", "--format=lzma"), len(elfData))
		}, LZMA},
		{"bzip2", func(t *testing.T) []byte { return sizeAppend(compressWith(t, elfData, "bzip2", "-9"), len(elfData)) }, Bzip2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bz := fakeBzImage(tc.payload(t))
			p, c, err := BzImagePayload(bz)
			if err != nil {
				t.Fatal(err)
			}
			if c != tc.want {
				t.Fatalf("compression = %s, want %s (magic % x)", c, tc.want, p[:6])
			}
			got, err := ExtractVmlinux(context.Background(), bz)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, elfData) {
				t.Fatalf("extracted %d bytes, differ from the %d-byte original", len(got), len(elfData))
			}
			if _, err := PVHEntry(got); err == nil {
				t.Error("PVHEntry found a PVH note in /bin/true")
			}
		})
	}
}

func TestExtractVmlinuxRejects(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "not a bzImage"},
		{"elf", []byte(elf.ELFMAG + strings.Repeat("\x00", 1024)), "not a bzImage"},
		{"unknown payload", fakeBzImage([]byte("plain text, no magic here")), "unknown payload compression"},
		{"payload past end", func() []byte {
			bz := fakeBzImage([]byte("x"))
			binary.LittleEndian.PutUint32(bz[bzPayloadLength:], 1<<20)
			return bz
		}(), "out of the"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ExtractVmlinux(context.Background(), tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestARM64ImageGzip(t *testing.T) {
	img := make([]byte, 4096)
	copy(img[56:], arm64ImageMagic)
	copy(img[64:], "kernel text")
	if !IsARM64Image(img) {
		t.Fatal("IsARM64Image(raw image) = false")
	}
	got, err := ARM64Image(context.Background(), img)
	if err != nil || !bytes.Equal(got, img) {
		t.Fatalf("raw Image: err %v, equal %v", err, bytes.Equal(got, img))
	}
	gz := compressWith(t, img, "gzip", "-n")
	got, err = ARM64Image(context.Background(), gz)
	if err != nil || !bytes.Equal(got, img) {
		t.Fatalf("gzip Image: err %v, equal %v", err, bytes.Equal(got, img))
	}
	if _, err := ARM64Image(context.Background(), compressWith(t, []byte("not a kernel"), "gzip")); err == nil {
		t.Fatal("ARM64Image accepted a gzip of something else")
	}
}

func TestFetchAMD64(t *testing.T) {
	k := fetchOrSkip(t, "amd64")
	t.Logf("kernel %s (%s %s), image %s", k.Release, k.Package, k.PackageVersion, k.Image)
	if !strings.HasPrefix(k.Package, "linux-image-6.") || !strings.HasSuffix(k.Release, "-amd64") {
		t.Errorf("package %q release %q: not a Debian amd64 kernel", k.Package, k.Release)
	}
	img, err := os.ReadFile(k.Image)
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.NewFile(bytes.NewReader(img))
	if err != nil {
		t.Fatalf("vmlinux is not ELF: %v", err)
	}
	if f.Machine != elf.EM_X86_64 || f.Class != elf.ELFCLASS64 {
		t.Errorf("vmlinux machine %v class %v", f.Machine, f.Class)
	}
	entry, err := PVHEntry(img)
	if err != nil {
		t.Fatal(err)
	}
	if entry == 0 || entry != k.PVHEntry {
		t.Errorf("PVH entry %#x, stamp says %#x", entry, k.PVHEntry)
	}
	// The PVH entry is a 32-bit physical address inside a loadable segment.
	inside := false
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && entry >= p.Paddr && entry < p.Paddr+p.Memsz {
			inside = true
		}
	}
	if !inside {
		t.Errorf("PVH entry %#x is in no PT_LOAD segment", entry)
	}
	bz, err := os.ReadFile(k.Vmlinuz)
	if err != nil {
		t.Fatal(err)
	}
	if _, c, err := BzImagePayload(bz); err != nil || c == None {
		t.Errorf("shipped vmlinuz: compression %s, err %v", c, err)
	}
	if cfg, err := os.ReadFile(k.Config); err != nil || !bytes.Contains(cfg, []byte("\nCONFIG_PVH=y\n")) {
		t.Errorf("config %s: err %v or no CONFIG_PVH=y", k.Config, err)
	}
	checkModulesTree(t, k)

	// A second Fetch finds everything cached: same kernel, no new files.
	debs, _ := filepath.Glob(filepath.Join(repoCache(t), "debs", "*.deb"))
	var mtimes []time.Time
	for _, d := range debs {
		st, _ := os.Stat(d)
		mtimes = append(mtimes, st.ModTime())
	}
	k2 := fetchOrSkip(t, "amd64")
	if k2.Image != k.Image || k2.Release != k.Release {
		t.Errorf("second Fetch: %+v, first %+v", k2, k)
	}
	for i, d := range debs {
		if st, err := os.Stat(d); err != nil || !st.ModTime().Equal(mtimes[i]) {
			t.Errorf("%s changed on a cached Fetch", d)
		}
	}
}

func TestFetchARM64(t *testing.T) {
	k := fetchOrSkip(t, "arm64")
	t.Logf("kernel %s (%s %s), image %s", k.Release, k.Package, k.PackageVersion, k.Image)
	img, err := os.ReadFile(k.Image)
	if err != nil {
		t.Fatal(err)
	}
	if !IsARM64Image(img) {
		t.Fatal("arm64 Image lacks the ARM\\x64 magic")
	}
	checkModulesTree(t, k)
}

func checkModulesTree(t *testing.T, k *Kernel) {
	t.Helper()
	var plain, compressed int
	filepath.WalkDir(k.ModulesDir, func(p string, d os.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case strings.HasSuffix(p, ".ko"):
			plain++
		case strings.Contains(filepath.Base(p), ".ko."):
			compressed++
		}
		return nil
	})
	if plain < 100 || compressed != 0 {
		t.Errorf("modules under %s: %d .ko, %d compressed; want many and none", k.ModulesDir, plain, compressed)
	}
	if _, err := os.Stat(filepath.Join(k.ModulesDir, "modules.builtin")); err != nil {
		t.Error(err)
	}
}

func TestDecompressModules(t *testing.T) {
	needTools(t, "xz", "zstd", "gzip")
	dir := t.TempDir()
	content := map[string][]byte{
		"kernel/fs/a.ko": []byte("module a, ELF would be here"),
		"kernel/fs/b.ko": []byte("module b"),
		"kernel/fs/c.ko": []byte("module c"),
		"kernel/d.ko":    []byte("plain module d"),
	}
	write := func(rel string, data []byte) {
		p := filepath.Join(dir, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("kernel/fs/a.ko.xz", compressWith(t, content["kernel/fs/a.ko"], "xz", "--check=crc32"))
	write("kernel/fs/b.ko.zst", compressWith(t, content["kernel/fs/b.ko"], "zstd", "-q"))
	write("kernel/fs/c.ko.gz", compressWith(t, content["kernel/fs/c.ko"], "gzip"))
	write("kernel/d.ko", content["kernel/d.ko"])
	n, err := DecompressModules(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("decompressed %d, want 3", n)
	}
	for rel, want := range content {
		got, err := os.ReadFile(filepath.Join(dir, rel))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %q, %v; want %q", rel, got, err, want)
		}
	}
	for _, gone := range []string{"kernel/fs/a.ko.xz", "kernel/fs/b.ko.zst", "kernel/fs/c.ko.gz"} {
		if _, err := os.Stat(filepath.Join(dir, gone)); err == nil {
			t.Errorf("%s still there", gone)
		}
	}
}
