package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// partitionedImage makes a GPT image with two ext4 partitions (labels P1,
// P2) and returns it with the partitions' byte offsets and sizes.
func (e *env) partitionedImage(name string) (img string, offs, sizes []int64) {
	e.t.Helper()
	need(e.t, "sfdisk", "mkfs.ext4")
	img = filepath.Join(e.work, name)
	f, _ := os.Create(img)
	f.Truncate(48 << 20)
	f.Close()
	cmd := exec.Command("sfdisk", "--quiet", img)
	cmd.Stdin = strings.NewReader("label: gpt\n,20M,L\n,,L\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		e.t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	out, err := exec.Command("sfdisk", "--json", img).Output()
	if err != nil {
		e.t.Fatalf("sfdisk --json: %v", err)
	}
	var pt struct {
		PartitionTable struct {
			SectorSize int64 `json:"sectorsize"`
			Partitions []struct {
				Start int64 `json:"start"`
				Size  int64 `json:"size"`
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal(out, &pt); err != nil {
		e.t.Fatal(err)
	}
	ss := pt.PartitionTable.SectorSize
	if ss == 0 {
		ss = 512
	}
	for i, p := range pt.PartitionTable.Partitions {
		off, size := p.Start*ss, p.Size*ss
		offs, sizes = append(offs, off), append(sizes, size)
		args := []string{"-q", "-F", "-L", "P" + strconv.Itoa(i+1), "-E", "offset=" + strconv.FormatInt(off, 10), img, strconv.FormatInt(size>>10, 10) + "k"}
		if out, err := exec.Command("mkfs.ext4", args...).CombinedOutput(); err != nil {
			e.t.Fatalf("mkfs.ext4 %v: %v\n%s", args, err, out)
		}
	}
	return img, offs, sizes
}

// TestPartitionChoice: several mountable partitions are listed, nothing
// is started.
func TestPartitionChoice(t *testing.T) {
	e := newEnv(t)
	img, _, _ := e.partitionedImage("two.img")
	r := e.run(img, filepath.Join(e.work, "mp"))
	if r.code != 1 || !strings.Contains(r.stderr, "2 mountable filesystems found, choose one with IMAGE@N") ||
		!strings.Contains(r.stderr, `@1 ext4 "P1"`) || !strings.Contains(r.stderr, `@2 ext4 "P2"`) {
		t.Errorf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	e.assertNothingLeft()
	if _, err := os.Stat(filepath.Join(e.work, "mp")); err == nil {
		t.Error("mount point created")
	}
}

// TestPartitionOwnerBusy: IMAGE@N mounts partition N (named after its
// label); --owner me shows files as the given uid and stores new ones as
// 1000; `qmount unmount` refuses while a file is open, `qmount stop
// --force` ends the mount anyway, cleanly.
func TestPartitionOwnerBusy(t *testing.T) {
	needVM(t)
	e := newEnv(t)
	img, offs, sizes := e.partitionedImage("two.img")
	r := e.mustRun("--owner", "me", "--uid", "4321", "--gid", "4322", img+"@2")
	mp := strings.TrimSpace(r.stdout)
	if mp != filepath.Join(e.mountDir, "P2") {
		t.Fatalf("mount point %q, want .../P2", mp)
	}
	st := e.statusOf(mp)

	// Owners as asked.
	var sb syscall.Stat_t
	if err := syscall.Stat(filepath.Join(mp, "lost+found"), &sb); err != nil {
		t.Fatal(err)
	}
	if sb.Uid != 4321 || sb.Gid != 4322 {
		t.Errorf("lost+found owned by %d:%d, want 4321:4322", sb.Uid, sb.Gid)
	}
	if err := os.WriteFile(filepath.Join(mp, "mine"), []byte("partition two\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(mp, "mine"), 4321, 4322); err != nil {
		t.Fatal(err)
	}

	// Busy: unmount refuses, the mount stays.
	f, err := os.Open(filepath.Join(mp, "mine"))
	if err != nil {
		t.Fatal(err)
	}
	ru := e.run("unmount", mp)
	oneErrorLine(t, ru, "busy")
	if got := e.statusOf(mp); got.State != "mounted" {
		t.Errorf("after a refused unmount: %s", got.State)
	}
	e.mustRun("stop", "--force", mp)
	f.Close()
	waitGone(t, "supervisor", st.SupervisorPID)
	waitGone(t, "VM", st.VMPID)
	e.assertNothingLeft()

	// Partition 2 holds the file, owned by 1000 on disk; partition 1 is
	// untouched; both are clean.
	for i := range offs {
		part := filepath.Join(e.work, "p"+strconv.Itoa(i+1)+".img")
		dd := exec.Command("dd", "if="+img, "of="+part, "bs=1M", "iflag=skip_bytes,count_bytes",
			"skip="+strconv.FormatInt(offs[i], 10), "count="+strconv.FormatInt(sizes[i], 10), "status=none")
		if out, err := dd.CombinedOutput(); err != nil {
			t.Fatalf("dd: %v %s", err, out)
		}
		fsck(t, part)
		out, err := exec.Command("debugfs", "-R", "stat /mine", part).CombinedOutput()
		if i == 0 {
			if err == nil && !strings.Contains(string(out), "not found") {
				t.Errorf("partition 1 has /mine:\n%s", out)
			}
			continue
		}
		if got := catImage(t, part, "/mine"); got != "partition two\n" {
			t.Errorf("partition 2 /mine = %q", got)
		}
		if !strings.Contains(string(out), "User:  1000   Group:  1000") {
			t.Errorf("owner on disk:\n%s", out)
		}
	}
}

// TestReadOnlyShared: --ro and -o ro mounts share a disk; writes fail with
// EROFS; a read-write mount is refused meanwhile.
func TestReadOnlyShared(t *testing.T) {
	needVM(t)
	e := newEnv(t)
	img := e.mkfs("ro.img", "RO", 32)
	mp1, mp2 := filepath.Join(e.work, "ro1"), filepath.Join(e.work, "ro2")
	e.mustRun("--ro", img, mp1)
	e.mustRun("-o", "ro,noatime", img, mp2)
	for _, mp := range []string{mp1, mp2} {
		if st := e.statusOf(mp); !st.ReadOnly {
			t.Errorf("%s not read-only in status", mp)
		}
		err := os.WriteFile(filepath.Join(mp, "x"), []byte("x"), 0o644)
		if !errors.Is(err, syscall.EROFS) {
			t.Errorf("write on %s: %v, want EROFS", mp, err)
		}
	}
	r := e.run(img, filepath.Join(e.work, "rw"))
	oneErrorLine(t, r, "already mounted read-only at ")
	oneErrorLine(t, e.run("unmount", img), "is mounted 2 times")
	e.mustRun("unmount", mp1)
	e.mustRun("umount", img) // by disk, now that it is mounted once
	e.assertNothingLeft()
	fsck(t, img)
}
