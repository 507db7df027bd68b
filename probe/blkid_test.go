package probe

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// needTools skips the test when a command it needs is not installed.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (needed for this differential test)", tool)
		}
	}
}

// run runs a command and fails the test with its output when it fails.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "LVM_SUPPRESS_FD_WARNINGS=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// sparseFile creates a sparse file of size bytes in a temp dir.
func sparseFile(t *testing.T, name string, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// blkidExport runs `blkid -p -o export` on a region of path and parses the
// output. An empty map means blkid found nothing.
func blkidExport(t *testing.T, path string, off, size int64) map[string]string {
	t.Helper()
	args := []string{"-p", "-o", "export"}
	if off != 0 || size != 0 {
		args = append(args, "-O", strconv.FormatInt(off, 10), "-S", strconv.FormatInt(size, 10))
	}
	args = append(args, path)
	out, err := exec.Command("blkid", args...).Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 2 {
		return map[string]string{}
	}
	if err != nil {
		t.Fatalf("blkid %v: %v\n%s", args, err, out)
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		// blkid's export format escapes shell metacharacters with '\'.
		var sb strings.Builder
		for i := 0; i < len(v); i++ {
			if v[i] == '\\' && i+1 < len(v) {
				i++
			}
			sb.WriteByte(v[i])
		}
		m[k] = sb.String()
	}
	return m
}

// contentExport renders Content the way blkid -o export names things.
func contentExport(c *Content) map[string]string {
	m := map[string]string{}
	if c == nil {
		return m
	}
	set := func(k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	set("TYPE", c.Type)
	set("USAGE", c.Usage)
	set("LABEL", c.Label)
	set("UUID", c.UUID)
	set("UUID_SUB", c.UUIDSub)
	set("VERSION", c.Version)
	if c.BlockSize != 0 {
		m["BLOCK_SIZE"] = strconv.FormatInt(c.BlockSize, 10)
	}
	return m
}

// compareBlkid checks that Detect on a region agrees with blkid on every
// key both report and on the keys blkid reports that we model.
func compareBlkid(t *testing.T, path string, off, size int64, wantType string) *Content {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if size == 0 {
		st, err := f.Stat()
		if err != nil {
			t.Fatal(err)
		}
		size = st.Size()
	}
	c, err := Detect(f, off, size)
	if err != nil {
		t.Fatalf("Detect: %v", err)
	}
	want := blkidExport(t, path, off, size)
	if off == 0 {
		want = blkidExport(t, path, 0, 0)
	}
	got := contentExport(c)
	if want["TYPE"] != wantType {
		t.Fatalf("blkid reports TYPE=%q, the test expected %q (blkid: %v)", want["TYPE"], wantType, want)
	}
	for _, k := range []string{"TYPE", "USAGE", "LABEL", "UUID", "UUID_SUB", "VERSION", "BLOCK_SIZE"} {
		if k == "UUID_SUB" && want["TYPE"] == "jbd" {
			continue
		}
		if got[k] != want[k] {
			t.Errorf("%s: got %q, blkid says %q", k, got[k], want[k])
		}
	}
	if t.Failed() {
		t.Logf("blkid: %v\nprobe: %+v", want, c)
	}
	return c
}

// fsCase makes one image with real tools and compares with blkid.
type fsCase struct {
	name  string
	size  int64
	tools []string
	typ   string
	make  func(t *testing.T, img string)
	check func(t *testing.T, c *Content) // extra assertions
}

// treeDir makes a small directory tree for image builders.
func treeDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	if err := os.MkdirAll(filepath.Join(d, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"hello.txt", "sub/data.bin"} {
		if err := os.WriteFile(filepath.Join(d, f), bytes.Repeat([]byte(f), 100), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func keyFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(p, []byte("correct horse battery staple"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func wantSize(want int64) func(t *testing.T, c *Content) {
	return func(t *testing.T, c *Content) {
		t.Helper()
		if c.Size != want {
			t.Errorf("Size = %d, want %d", c.Size, want)
		}
	}
}

const mib = 1 << 20

var fsCases = []fsCase{
	{name: "ext2", size: 32 * mib, tools: []string{"mkfs.ext2"}, typ: "ext2",
		make: func(t *testing.T, img string) { run(t, "mkfs.ext2", "-q", "-F", "-L", "my-ext2", img) }, check: wantSize(32 * mib)},
	{name: "ext3", size: 32 * mib, tools: []string{"mkfs.ext3"}, typ: "ext3",
		make: func(t *testing.T, img string) { run(t, "mkfs.ext3", "-q", "-F", "-L", "my ext3", img) }},
	{name: "ext4", size: 64 * mib, tools: []string{"mkfs.ext4"}, typ: "ext4",
		make: func(t *testing.T, img string) { run(t, "mkfs.ext4", "-q", "-F", "-L", "rootfs", img) }, check: wantSize(64 * mib)},
	{name: "ext4-nojournal", size: 32 * mib, tools: []string{"mkfs.ext4"}, typ: "ext4",
		make: func(t *testing.T, img string) { run(t, "mkfs.ext4", "-q", "-F", "-O", "^has_journal", img) }},
	{name: "xfs", size: 320 * mib, tools: []string{"mkfs.xfs"}, typ: "xfs",
		make: func(t *testing.T, img string) { run(t, "mkfs.xfs", "-q", "-f", "-L", "myxfs", img) }, check: wantSize(320 * mib)},
	{name: "btrfs", size: 128 * mib, tools: []string{"mkfs.btrfs"}, typ: "btrfs",
		make: func(t *testing.T, img string) { run(t, "mkfs.btrfs", "-q", "-f", "-L", "mybtrfs", img) },
		check: func(t *testing.T, c *Content) {
			if c.Btrfs == nil || c.Btrfs.DevID != 1 || c.Btrfs.NumDevices != 1 || c.Btrfs.FSID != c.UUID {
				t.Errorf("btrfs info = %+v", c.Btrfs)
			}
		}},
	{name: "vfat12", size: 4 * mib, tools: []string{"mkfs.vfat"}, typ: "vfat",
		make: func(t *testing.T, img string) { run(t, "mkfs.vfat", "-F", "12", "-n", "FLOPPY", img) }},
	{name: "vfat16", size: 64 * mib, tools: []string{"mkfs.vfat"}, typ: "vfat",
		make: func(t *testing.T, img string) { run(t, "mkfs.vfat", "-F", "16", "-n", "SIXTEEN", img) }},
	{name: "vfat32", size: 64 * mib, tools: []string{"mkfs.vfat"}, typ: "vfat",
		make: func(t *testing.T, img string) { run(t, "mkfs.vfat", "-F", "32", "-n", "EFI SYS", img) }, check: wantSize(64 * mib)},
	{name: "exfat", size: 64 * mib, tools: []string{"mkfs.exfat"}, typ: "exfat",
		make: func(t *testing.T, img string) { run(t, "mkfs.exfat", "-L", "MyExFAT", img) }},
	{name: "ntfs", size: 64 * mib, tools: []string{"mkfs.ntfs"}, typ: "ntfs",
		make: func(t *testing.T, img string) { run(t, "mkfs.ntfs", "-q", "-F", "-f", "-L", "Windows Data", img) }},
	{name: "f2fs", size: 128 * mib, tools: []string{"mkfs.f2fs"}, typ: "f2fs",
		make: func(t *testing.T, img string) { run(t, "mkfs.f2fs", "-q", "-l", "myf2fs", img) }},
	{name: "hfs", size: 16 * mib, tools: []string{"hformat"}, typ: "hfs",
		make: func(t *testing.T, img string) { run(t, "hformat", "-l", "Mac Disk", img) }},
	{name: "iso9660", size: 0, tools: []string{"genisoimage"}, typ: "iso9660",
		make: func(t *testing.T, img string) {
			run(t, "genisoimage", "-quiet", "-V", "MY_CDROM", "-o", img, treeDir(t))
		}},
	{name: "iso9660-joliet", size: 0, tools: []string{"xorriso"}, typ: "iso9660",
		make: func(t *testing.T, img string) {
			run(t, "xorriso", "-as", "mkisofs", "-quiet", "-J", "-V", "Joliet Volume", "-o", img, treeDir(t))
		}},
	{name: "udf", size: 32 * mib, tools: []string{"mkudffs"}, typ: "udf",
		make: func(t *testing.T, img string) {
			run(t, "mkudffs", "--media-type=hd", "--label=MyUDF", img)
		}},
	{name: "squashfs", size: 0, tools: []string{"mksquashfs"}, typ: "squashfs",
		make: func(t *testing.T, img string) { run(t, "mksquashfs", treeDir(t), img, "-quiet", "-noappend") }},
	{name: "erofs", size: 0, tools: []string{"mkfs.erofs"}, typ: "erofs",
		make: func(t *testing.T, img string) {
			run(t, "mkfs.erofs", "--quiet", "-U0f4e3c2a-1b2c-4d5e-8f90-a1b2c3d4e5f6", img, treeDir(t))
		}},
	{name: "jfs", size: 64 * mib, tools: []string{"mkfs.jfs"}, typ: "jfs",
		make: func(t *testing.T, img string) { run(t, "mkfs.jfs", "-q", "-L", "myjfs", img) }},
	{name: "nilfs2", size: 160 * mib, tools: []string{"mkfs.nilfs2"}, typ: "nilfs2",
		make: func(t *testing.T, img string) { run(t, "mkfs.nilfs2", "-q", "-f", "-L", "mynilfs", img) }},
	{name: "minix1", size: 8 * mib, tools: []string{"mkfs.minix"}, typ: "minix",
		make: func(t *testing.T, img string) { run(t, "mkfs.minix", "-1", img) }},
	{name: "minix2", size: 8 * mib, tools: []string{"mkfs.minix"}, typ: "minix",
		make: func(t *testing.T, img string) { run(t, "mkfs.minix", "-2", img) }},
	{name: "minix3", size: 8 * mib, tools: []string{"mkfs.minix"}, typ: "minix",
		make: func(t *testing.T, img string) { run(t, "mkfs.minix", "-3", img) }},
	{name: "reiserfs", size: 64 * mib, tools: []string{"mkreiserfs"}, typ: "reiserfs",
		make: func(t *testing.T, img string) { run(t, "mkreiserfs", "-q", "-f", "-l", "myreiser", img) }},
	{name: "swap", size: 8 * mib, tools: []string{"mkswap"}, typ: "swap",
		make: func(t *testing.T, img string) { run(t, "mkswap", "-L", "myswap", img) }, check: wantSize(8 * mib)},
	{name: "luks1", size: 16 * mib, tools: []string{"cryptsetup"}, typ: "crypto_LUKS",
		make: func(t *testing.T, img string) {
			run(t, "cryptsetup", "luksFormat", "-q", "--type", "luks1", "--pbkdf", "pbkdf2",
				"--pbkdf-force-iterations", "1000", "--key-file", keyFile(t), img)
		},
		check: func(t *testing.T, c *Content) {
			if c.LUKS == nil || c.LUKS.Version != 1 || c.LUKS.KeySlots != 1 || c.LUKS.Cipher == "" || c.LUKS.PayloadOffset <= 0 {
				t.Errorf("luks info = %+v", c.LUKS)
			}
		}},
	{name: "luks2", size: 32 * mib, tools: []string{"cryptsetup"}, typ: "crypto_LUKS",
		make: func(t *testing.T, img string) {
			run(t, "cryptsetup", "luksFormat", "-q", "--type", "luks2", "--pbkdf", "pbkdf2",
				"--pbkdf-force-iterations", "1000", "--label", "secret-disk", "--key-file", keyFile(t), img)
		},
		check: func(t *testing.T, c *Content) {
			if c.LUKS == nil || c.LUKS.Version != 2 || c.LUKS.KeySlots != 1 || c.LUKS.Cipher == "" || c.LUKS.PayloadOffset <= 0 || c.LUKS.PBKDF != "pbkdf2" {
				t.Errorf("luks info = %+v", c.LUKS)
			}
		}},
	{name: "luks2-argon2id", size: 32 * mib, tools: []string{"cryptsetup"}, typ: "crypto_LUKS",
		make: func(t *testing.T, img string) {
			run(t, "cryptsetup", "luksFormat", "-q", "--type", "luks2", "--pbkdf", "argon2id",
				"--pbkdf-memory", "65536", "--pbkdf-force-iterations", "4", "--pbkdf-parallel", "1", "--key-file", keyFile(t), img)
		},
		check: func(t *testing.T, c *Content) {
			if c.LUKS == nil || c.LUKS.PBKDF != "argon2id" || c.LUKS.PBKDFMemoryKiB != 65536 {
				t.Errorf("luks info = %+v", c.LUKS)
			}
		}},
}

// TestDetectMatchesBlkid makes an image with each mkfs Debian ships and
// checks that Detect reports what `blkid -p` reports.
func TestDetectMatchesBlkid(t *testing.T) {
	needTools(t, "blkid")
	for _, tc := range fsCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			needTools(t, tc.tools...)
			var img string
			if tc.size > 0 {
				img = sparseFile(t, tc.name+".img", tc.size)
			} else {
				img = filepath.Join(t.TempDir(), tc.name+".img")
			}
			tc.make(t, img)
			c := compareBlkid(t, img, 0, 0, tc.typ)
			if c != nil && tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}

// TestHFSPlusMatchesBlkid checks HFS+ on the HFS+ side of an ISO/HFS+
// hybrid made by xorriso (Debian 12 has no mkfs.hfsplus). The HFS+ volume
// sits in an Apple partition map entry; its header is located by scanning.
func TestHFSPlusMatchesBlkid(t *testing.T) {
	needTools(t, "blkid", "xorriso")
	img := filepath.Join(t.TempDir(), "hybrid.iso")
	run(t, "xorriso", "-as", "mkisofs", "-quiet", "-hfsplus", "-V", "MacVolume", "-o", img, treeDir(t))
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	off := -1
	for i := 1024; i+4 <= len(b); i += 512 {
		if string(b[i:i+4]) == "H+\x00\x04" {
			off = i - 1024
			break
		}
	}
	if off < 0 {
		t.Fatal("xorriso wrote no HFS+ volume header")
	}
	c := compareBlkid(t, img, int64(off), int64(len(b)-off), "hfsplus")
	if c != nil && c.Label != "MacVolume" {
		t.Errorf("label %q, want MacVolume", c.Label)
	}
	// The whole image is the ISO 9660 side.
	compareBlkid(t, img, 0, 0, "iso9660")
}
