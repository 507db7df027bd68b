package agent

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDetectFSType makes real images with each filesystem's own mkfs and
// checks that detection names the type mount(2) takes.
func TestDetectFSType(t *testing.T) {
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "hello.txt"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		want string
		size string   // sparse image size; "" when the tool writes the file
		tool string   // the program to run
		args []string // IMG and SRC are replaced
	}{
		{"ext4", "16M", "mkfs.ext4", []string{"-q", "-F", "IMG"}},
		{"ext4", "16M", "mkfs.ext2", []string{"-q", "-F", "IMG"}}, // the ext4 driver mounts ext2
		{"xfs", "300M", "mkfs.xfs", []string{"-q", "-f", "IMG"}},
		{"btrfs", "128M", "mkfs.btrfs", []string{"-q", "-f", "IMG"}},
		{"vfat", "16M", "mkfs.vfat", []string{"IMG"}},
		{"vfat", "64M", "mkfs.vfat", []string{"-F", "32", "IMG"}},
		{"exfat", "16M", "mkfs.exfat", []string{"IMG"}},
		{"f2fs", "64M", "mkfs.f2fs", []string{"-q", "-f", "IMG"}},
		{"jfs", "32M", "mkfs.jfs", []string{"-q", "IMG"}},
		{"nilfs2", "160M", "mkfs.nilfs2", []string{"-q", "-f", "IMG"}},
		{"ntfs3", "16M", "mkfs.ntfs", []string{"-q", "-F", "-f", "IMG"}},
		{"udf", "16M", "mkudffs", []string{"IMG"}},
		{"iso9660", "", "genisoimage", []string{"-quiet", "-o", "IMG", "SRC"}},
		{"udf", "", "genisoimage", []string{"-quiet", "-udf", "-o", "IMG", "SRC"}}, // a UDF bridge disc: UDF wins
		{"squashfs", "", "mksquashfs", []string{"SRC", "IMG", "-quiet", "-noappend"}},
		{"erofs", "", "mkfs.erofs", []string{"--quiet", "IMG", "SRC"}},
	} {
		t.Run(tc.tool+"_"+tc.want+"_"+strings.Join(tc.args[:min(2, len(tc.args))], ""), func(t *testing.T) {
			if _, err := exec.LookPath(tc.tool); err != nil {
				t.Skipf("%s not installed (apt-get install the package that has it)", tc.tool)
			}
			img := filepath.Join(t.TempDir(), "img")
			if tc.size != "" {
				if out, err := exec.Command("truncate", "-s", tc.size, img).CombinedOutput(); err != nil {
					t.Fatalf("truncate: %v: %s", err, out)
				}
			}
			args := make([]string, len(tc.args))
			for i, a := range tc.args {
				args[i] = strings.NewReplacer("IMG", img, "SRC", src).Replace(a)
			}
			if out, err := exec.Command(tc.tool, args...).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v: %s", tc.tool, err, out)
			}
			f, err := os.Open(img)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got, err := DetectFSType(f)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("DetectFSType = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDetectFSTypeUnknown(t *testing.T) {
	for name, content := range map[string]string{
		"empty":  "",
		"zeros":  strings.Repeat("\x00", 1<<20),
		"short":  "hsq",
		"random": strings.Repeat("qmount", 20000),
	} {
		got, err := DetectFSType(strings.NewReader(content))
		if err != nil || got != "" {
			t.Errorf("%s: %q, %v; want nothing", name, got, err)
		}
	}
}
