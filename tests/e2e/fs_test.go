//go:build linux

package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// fsSpec says how to make and check one filesystem type.
type fsSpec struct {
	name    string
	sizeMiB int64
	tools   []string
	// mkfs makes the image; when seed is non-empty it also puts the seed
	// tree in (populated reports whether it could).
	mkfs func(t *testing.T, img, seed string) (populated bool)
	// fsck checks the image read-only; nil where Debian has no checker.
	fsck     func(t *testing.T, img string)
	readOnly bool
	// skip lists filesystem-internal names to ignore when comparing.
	skip map[string]bool
	// noEmptyFiles: the populate tool drops empty files.
	noSymlinks bool
}

func sparse(t *testing.T, img string, mib int64) {
	t.Helper()
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(mib << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func fsckCmd(name string, args ...string) func(t *testing.T, img string) {
	return func(t *testing.T, img string) {
		t.Helper()
		out, err := exec.Command(name, append(args, img)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v %s: %v\n%s", name, args, img, err, out)
		}
	}
}

var fsSpecs = []fsSpec{
	{
		name: "ext4", sizeMiB: 64, tools: []string{"mkfs.ext4", "e2fsck"},
		mkfs: func(t *testing.T, img, seed string) bool {
			sparse(t, img, 64)
			run(t, "mkfs.ext4", "-q", "-F", "-d", seed, img)
			return true
		},
		fsck: fsckCmd("e2fsck", "-fn"),
		skip: map[string]bool{"lost+found": true},
	},
	{
		name: "ext2", sizeMiB: 64, tools: []string{"mkfs.ext2", "e2fsck"},
		mkfs: func(t *testing.T, img, seed string) bool {
			sparse(t, img, 64)
			run(t, "mkfs.ext2", "-q", "-F", "-d", seed, img)
			return true
		},
		fsck: fsckCmd("e2fsck", "-fn"),
		skip: map[string]bool{"lost+found": true},
	},
	{
		name: "btrfs", sizeMiB: 256, tools: []string{"mkfs.btrfs", "btrfs"},
		mkfs: func(t *testing.T, img, seed string) bool {
			sparse(t, img, 256)
			run(t, "mkfs.btrfs", "-q", "-f", "--rootdir", seed, img)
			return true
		},
		fsck: fsckCmd("btrfs", "check", "--readonly"),
	},
	{
		name: "xfs", sizeMiB: 320, tools: []string{"mkfs.xfs", "xfs_repair"},
		mkfs: func(t *testing.T, img, seed string) bool {
			sparse(t, img, 320)
			run(t, "mkfs.xfs", "-q", "-f", img)
			return false
		},
		fsck: fsckCmd("xfs_repair", "-n", "-f"),
	},
	{
		name: "vfat", sizeMiB: 64, tools: []string{"mkfs.vfat", "mcopy", "fsck.vfat"},
		mkfs: func(t *testing.T, img, seed string) bool {
			sparse(t, img, 64)
			run(t, "mkfs.vfat", img)
			entries, err := os.ReadDir(seed)
			if err != nil {
				t.Fatal(err)
			}
			args := []string{"-s", "-i", img}
			for _, e := range entries {
				args = append(args, filepath.Join(seed, e.Name()))
			}
			run(t, "mcopy", append(args, "::")...)
			return true
		},
		fsck: fsckCmd("fsck.vfat", "-n"),
	},
	{
		name: "exfat", sizeMiB: 64, tools: []string{"mkfs.exfat", "fsck.exfat"},
		mkfs: func(t *testing.T, img, seed string) bool {
			sparse(t, img, 64)
			run(t, "mkfs.exfat", img)
			return false
		},
		fsck: fsckCmd("fsck.exfat", "-n"),
	},
	{
		name: "f2fs", sizeMiB: 128, tools: []string{"mkfs.f2fs", "sload.f2fs", "fsck.f2fs"},
		mkfs: func(t *testing.T, img, seed string) bool {
			sparse(t, img, 128)
			run(t, "mkfs.f2fs", "-q", "-f", img)
			run(t, "sload.f2fs", "-f", seed, img)
			return true
		},
		fsck: fsckCmd("fsck.f2fs", "--dry-run"),
	},
	{
		name: "jfs", sizeMiB: 64, tools: []string{"mkfs.jfs", "fsck.jfs"},
		mkfs: func(t *testing.T, img, seed string) bool {
			sparse(t, img, 64)
			run(t, "mkfs.jfs", "-q", img)
			return false
		},
		fsck: fsckCmd("fsck.jfs", "-n", "-f"),
		skip: map[string]bool{"lost+found": true},
	},
	{
		name: "nilfs2", sizeMiB: 160, tools: []string{"mkfs.nilfs2"},
		mkfs: func(t *testing.T, img, seed string) bool {
			sparse(t, img, 160)
			run(t, "mkfs.nilfs2", "-q", "-f", img)
			return false
		},
		// nilfs-tools ships no fsck; the re-mount check reads it back.
		skip: map[string]bool{".nilfs": true},
	},
	{
		name: "udf", sizeMiB: 64, tools: []string{"mkudffs"},
		mkfs: func(t *testing.T, img, seed string) bool {
			sparse(t, img, 64)
			run(t, "mkudffs", "--utf8", "--media-type=hd", "--blocksize=512", img)
			return false
		},
		// udftools 2.3 ships no checker; the re-mount check reads it back.
		skip: map[string]bool{"lost+found": true},
	},
	{
		name: "iso9660", readOnly: true, tools: []string{"genisoimage"},
		mkfs: func(t *testing.T, img, seed string) bool {
			run(t, "genisoimage", "-quiet", "-R", "-J", "-o", img, seed)
			return true
		},
	},
	{
		name: "squashfs", readOnly: true, tools: []string{"mksquashfs"},
		mkfs: func(t *testing.T, img, seed string) bool {
			run(t, "mksquashfs", seed, img, "-quiet", "-noappend")
			return true
		},
	},
}

// TestFilesystems boots, mounts, reads the seed, writes, renames, deletes,
// fsyncs and shuts down cleanly for every type; then checks the image on
// the host with fsck and by a read-only re-mount that it holds exactly what
// was written.
func TestFilesystems(t *testing.T) {
	findGuest(t, hostArch())
	for _, spec := range fsSpecs {
		t.Run(spec.name, func(t *testing.T) {
			requireTools(t, spec.tools...)
			dir := t.TempDir()
			seedDir := filepath.Join(dir, "seed")
			seed := seedTree(t)
			writeTree(t, seedDir, seed)
			img := filepath.Join(dir, spec.name+".img")
			populated := spec.mkfs(t, img, seedDir)

			want := tree{}
			if populated {
				for k, v := range seed {
					want[k] = v
				}
			}
			if spec.readOnly {
				b := boot(t, img, bootOpts{fstype: spec.name, readOnly: true})
				if d := diffTrees(want, readTree(t, b.mnt, spec.skip)); len(d) > 0 {
					t.Fatalf("read-only mount differs from the seed:\n%s", strings.Join(d, "\n"))
				}
				err := os.WriteFile(filepath.Join(b.mnt, "new"), []byte("x"), 0o644)
				if !errors.Is(err, syscall.EROFS) {
					t.Errorf("write on a read-only mount: %v, want EROFS", err)
				}
				b.stop(t)
				return
			}

			b := boot(t, img, bootOpts{fstype: spec.name})
			if tl, ok := timeline(b.console); ok {
				t.Logf("boot %v; guest timeline (ms): %v", b.bootTime, tl)
			}
			if d := diffTrees(want, readTree(t, b.mnt, spec.skip)); len(d) > 0 {
				t.Fatalf("mount differs from the seed:\n%s", strings.Join(d, "\n"))
			}
			mutate(t, b.mnt, want)
			if d := diffTrees(want, readTree(t, b.mnt, spec.skip)); len(d) > 0 {
				t.Fatalf("after writing, the mount differs from what was written:\n%s", strings.Join(d, "\n"))
			}
			b.stop(t)

			if spec.fsck != nil {
				spec.fsck(t, img)
			}
			// Read it back in a fresh guest, read-only: exactly what was written.
			b2 := boot(t, img, bootOpts{fstype: spec.name, readOnly: true})
			if d := diffTrees(want, readTree(t, b2.mnt, spec.skip)); len(d) > 0 {
				t.Fatalf("after a clean shutdown, the image differs from what was written:\n%s", strings.Join(d, "\n"))
			}
			b2.stop(t)
			if spec.fsck != nil {
				spec.fsck(t, img)
			}
		})
	}
}

// mutate writes, renames, deletes and fsyncs through the mount, keeping
// want in step.
func mutate(t *testing.T, mnt string, want tree) {
	t.Helper()
	p := func(rel string) string { return filepath.Join(mnt, rel) }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Mkdir(p("new"), 0o755))
	want["new"] = nil
	must(os.WriteFile(p("new/a.txt"), []byte("first file\n"), 0o644))
	big := randomBytes(t, 3<<20+123)
	f, err := os.Create(p("new/big.bin"))
	must(err)
	for off := 0; off < len(big); off += 100 << 10 {
		end := min(off+100<<10, len(big))
		_, err := f.Write(big[off:end])
		must(err)
	}
	must(f.Sync())
	must(f.Close())
	want["new/big.bin"] = big

	// Rename within and across directories, replacing nothing and something.
	must(os.Rename(p("new/a.txt"), p("new/b.txt")))
	must(os.Mkdir(p("other"), 0o755))
	want["other"] = nil
	must(os.WriteFile(p("other/victim"), []byte("to be replaced"), 0o644))
	must(os.Rename(p("new/b.txt"), p("other/victim")))
	want["other/victim"] = []byte("first file\n")

	// Delete a file and a directory.
	must(os.WriteFile(p("gone.txt"), []byte("short-lived"), 0o644))
	must(os.Remove(p("gone.txt")))
	must(os.Mkdir(p("gonedir"), 0o755))
	must(os.Remove(p("gonedir")))
	if _, ok := want["hello.txt"]; ok {
		must(os.Remove(p("hello.txt")))
		delete(want, "hello.txt")
	}

	// Overwrite part of a file in place and append to it.
	f, err = os.OpenFile(p("new/big.bin"), os.O_RDWR, 0)
	must(err)
	_, err = f.WriteAt([]byte("PATCHED"), 1000)
	must(err)
	must(f.Close())
	copy(big[1000:], "PATCHED")
	f, err = os.OpenFile(p("new/big.bin"), os.O_WRONLY|os.O_APPEND, 0)
	must(err)
	_, err = f.Write([]byte("tail"))
	must(err)
	must(f.Sync())
	must(f.Close())
	want["new/big.bin"] = append(big, "tail"...)
}
