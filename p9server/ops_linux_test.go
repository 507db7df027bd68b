//go:build linux

package p9server

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	// Exact permissions on both sides of the differential tests; the
	// server's own umask independence is tested separately.
	syscall.Umask(0)
	os.Exit(m.Run())
}

// baseTree is the starting state of every differential case.
func baseTree(t testing.TB, dir string) {
	t.Helper()
	must(t, os.WriteFile(filepath.Join(dir, "a.txt"), []byte("hello"), 0o644))
	must(t, os.Mkdir(filepath.Join(dir, "d"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "d", "x"), []byte("x"), 0o600))
	must(t, os.Mkdir(filepath.Join(dir, "e"), 0o700))
	must(t, os.Symlink("a.txt", filepath.Join(dir, "s")))
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// p9 helpers: each walks to the parent directory of path first.
func parentOf(t testing.TB, root p9.File, path string) (p9.File, string) {
	dir, name := filepath.Split(path)
	return walk(t, root, strings.TrimSuffix(dir, "/")), name
}

func p9Create(t testing.TB, root p9.File, path string, flags p9.OpenFlags, perm p9.FileMode, data string) error {
	d, name := parentOf(t, root, path)
	defer d.Close()
	f, _, _, err := d.Create(name, flags, perm, 0, 0)
	if err != nil {
		return err
	}
	if data != "" {
		if _, err := f.WriteAt([]byte(data), 0); err != nil {
			return err
		}
	}
	return nil
}

func p9Open(t testing.TB, root p9.File, path string, flags p9.OpenFlags, fn func(p9.File) error) error {
	f, err := tryWalk(root, path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, _, err := f.Open(flags); err != nil {
		return err
	}
	return fn(f)
}

func p9Setattr(root p9.File, path string, valid p9.SetAttrMask, attr p9.SetAttr) error {
	f, err := tryWalk(root, path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.SetAttr(valid, attr)
}

func p9Unlink(t testing.TB, root p9.File, path string, flags uint32) error {
	d, name := parentOf(t, root, path)
	defer d.Close()
	return d.UnlinkAt(name, flags)
}

func p9Rename(t testing.TB, root p9.File, from, to string) error {
	fd, fname := parentOf(t, root, from)
	defer fd.Close()
	td, tname := parentOf(t, root, to)
	defer td.Close()
	return fd.RenameAt(fname, td, tname)
}

func sysOpenWrite(path string, flags int, data string, off int64) error {
	return sysOpenWritePerm(path, flags, 0o644, data, off)
}

func sysOpenWritePerm(path string, flags int, perm uint32, data string, off int64) error {
	fd, err := unix.Open(path, flags|unix.O_CLOEXEC, perm)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if data != "" {
		_, err = unix.Pwrite(fd, []byte(data), off)
	}
	return err
}

// TestOperationsMatchSyscalls runs each operation through 9P on a served
// tree and as the plain system call on an identical tree, and compares
// the errno and the resulting trees.
func TestOperationsMatchSyscalls(t *testing.T) {
	const (
		wr     = p9.WriteOnly
		rdwr   = p9.ReadWrite
		excl   = p9.OpenFlags(dotlExcl)
		trunc  = p9.OpenFlags(dotlTrunc)
		appnd  = p9.OpenFlags(dotlAppend)
		rmdir  = unix.AT_REMOVEDIR
		osCrEx = unix.O_CREAT | unix.O_EXCL | unix.O_WRONLY | unix.O_NOFOLLOW
	)
	long := strings.Repeat("n", 300)
	cases := []struct {
		name string
		p9   func(t *testing.T, root p9.File) error
		sys  func(dir string) error
	}{
		{"mkdir", func(t *testing.T, r p9.File) error { _, err := r.Mkdir("n", 0o750, 0, 0); return err },
			func(d string) error { return unix.Mkdir(d+"/n", 0o750) }},
		{"mkdir sticky setgid", func(t *testing.T, r p9.File) error { _, err := r.Mkdir("n", 0o3777, 0, 0); return err },
			func(d string) error { return unix.Mkdir(d+"/n", 0o3777) }},
		{"mkdir exists", func(t *testing.T, r p9.File) error { _, err := r.Mkdir("d", 0o755, 0, 0); return err },
			func(d string) error { return unix.Mkdir(d+"/d", 0o755) }},
		{"mkdir name too long", func(t *testing.T, r p9.File) error { _, err := r.Mkdir(long, 0o755, 0, 0); return err },
			func(d string) error { return unix.Mkdir(d+"/"+long, 0o755) }},
		{"create new", func(t *testing.T, r p9.File) error { return p9Create(t, r, "d/new", wr|excl, 0o640, "data") },
			func(d string) error { return sysOpenWritePerm(d+"/d/new", osCrEx, 0o640, "data", 0) }},
		{"create exclusive exists", func(t *testing.T, r p9.File) error { return p9Create(t, r, "a.txt", wr|excl, 0o600, "") },
			func(d string) error { return sysOpenWrite(d+"/a.txt", osCrEx, "", 0) }},
		{"create existing truncates", func(t *testing.T, r p9.File) error { return p9Create(t, r, "a.txt", wr|trunc, 0o600, "Z") },
			func(d string) error {
				return sysOpenWrite(d+"/a.txt", unix.O_CREAT|unix.O_TRUNC|unix.O_WRONLY|unix.O_NOFOLLOW, "Z", 0)
			}},
		{"create existing dir", func(t *testing.T, r p9.File) error { return p9Create(t, r, "d", p9.ReadOnly, 0o600, "") },
			func(d string) error { return sysOpenWrite(d+"/d", unix.O_CREAT|unix.O_RDONLY|unix.O_NOFOLLOW, "", 0) }},
		{"create over symlink", func(t *testing.T, r p9.File) error { return p9Create(t, r, "s", wr, 0o600, "evil") },
			func(d string) error {
				return sysOpenWrite(d+"/s", unix.O_CREAT|unix.O_WRONLY|unix.O_NOFOLLOW, "evil", 0)
			}},
		{"write at offset", func(t *testing.T, r p9.File) error {
			return p9Open(t, r, "a.txt", rdwr, func(f p9.File) error { _, err := f.WriteAt([]byte("XY"), 10); return err })
		}, func(d string) error { return sysOpenWrite(d+"/a.txt", unix.O_RDWR, "XY", 10) }},
		{"open append writes at end", func(t *testing.T, r p9.File) error {
			return p9Open(t, r, "a.txt", wr|appnd, func(f p9.File) error { _, err := f.WriteAt([]byte("!!"), 0); return err })
		}, func(d string) error { return sysOpenWrite(d+"/a.txt", unix.O_WRONLY|unix.O_APPEND, "!!", 0) }},
		{"open truncate", func(t *testing.T, r p9.File) error {
			return p9Open(t, r, "a.txt", wr|trunc, func(p9.File) error { return nil })
		}, func(d string) error { return sysOpenWrite(d+"/a.txt", unix.O_WRONLY|unix.O_TRUNC, "", 0) }},
		{"open dir for write", func(t *testing.T, r p9.File) error {
			return p9Open(t, r, "d", wr, func(p9.File) error { return nil })
		}, func(d string) error { return sysOpenWrite(d+"/d", unix.O_WRONLY, "", 0) }},
		{"walk missing", func(t *testing.T, r p9.File) error {
			f, err := tryWalk(r, "nope")
			if err == nil {
				f.Close()
			}
			return err
		}, func(d string) error { var st unix.Stat_t; return unix.Lstat(d+"/nope", &st) }},
		{"unlink file", func(t *testing.T, r p9.File) error { return p9Unlink(t, r, "a.txt", 0) },
			func(d string) error { return unix.Unlink(d + "/a.txt") }},
		{"unlink missing", func(t *testing.T, r p9.File) error { return p9Unlink(t, r, "zz", 0) },
			func(d string) error { return unix.Unlink(d + "/zz") }},
		{"unlink dir", func(t *testing.T, r p9.File) error { return p9Unlink(t, r, "e", 0) },
			func(d string) error { return unix.Unlink(d + "/e") }},
		{"rmdir empty", func(t *testing.T, r p9.File) error { return p9Unlink(t, r, "e", rmdir) },
			func(d string) error { return unix.Rmdir(d + "/e") }},
		{"rmdir not empty", func(t *testing.T, r p9.File) error { return p9Unlink(t, r, "d", rmdir) },
			func(d string) error { return unix.Rmdir(d + "/d") }},
		{"rmdir file", func(t *testing.T, r p9.File) error { return p9Unlink(t, r, "a.txt", rmdir) },
			func(d string) error { return unix.Rmdir(d + "/a.txt") }},
		{"rename across dirs", func(t *testing.T, r p9.File) error { return p9Rename(t, r, "a.txt", "d/y") },
			func(d string) error { return unix.Rename(d+"/a.txt", d+"/d/y") }},
		{"rename replacing file", func(t *testing.T, r p9.File) error { return p9Rename(t, r, "a.txt", "d/x") },
			func(d string) error { return unix.Rename(d+"/a.txt", d+"/d/x") }},
		{"rename dir over empty dir", func(t *testing.T, r p9.File) error { return p9Rename(t, r, "d", "e") },
			func(d string) error { return unix.Rename(d+"/d", d+"/e") }},
		{"rename dir over non-empty dir", func(t *testing.T, r p9.File) error { return p9Rename(t, r, "e", "d") },
			func(d string) error { return unix.Rename(d+"/e", d+"/d") }},
		{"rename file over dir", func(t *testing.T, r p9.File) error { return p9Rename(t, r, "a.txt", "e") },
			func(d string) error { return unix.Rename(d+"/a.txt", d+"/e") }},
		{"rename dir over file", func(t *testing.T, r p9.File) error { return p9Rename(t, r, "e", "a.txt") },
			func(d string) error { return unix.Rename(d+"/e", d+"/a.txt") }},
		{"rename dir into itself", func(t *testing.T, r p9.File) error { return p9Rename(t, r, "d", "d/inner") },
			func(d string) error { return unix.Rename(d+"/d", d+"/d/inner") }},
		{"rename missing", func(t *testing.T, r p9.File) error { return p9Rename(t, r, "zz", "d/zz") },
			func(d string) error { return unix.Rename(d+"/zz", d+"/d/zz") }},
		{"rename symlink", func(t *testing.T, r p9.File) error { return p9Rename(t, r, "s", "d/s2") },
			func(d string) error { return unix.Rename(d+"/s", d+"/d/s2") }},
		{"link", func(t *testing.T, r p9.File) error {
			target := walk(t, r, "a.txt")
			defer target.Close()
			dd := walk(t, r, "d")
			defer dd.Close()
			return dd.Link(target, "hard")
		}, func(d string) error { return unix.Link(d+"/a.txt", d+"/d/hard") }},
		{"link symlink itself", func(t *testing.T, r p9.File) error {
			target := walk(t, r, "s")
			defer target.Close()
			return r.Link(target, "s2")
		}, func(d string) error { return unix.Linkat(unix.AT_FDCWD, d+"/s", unix.AT_FDCWD, d+"/s2", 0) }},
		{"link dir", func(t *testing.T, r p9.File) error {
			target := walk(t, r, "d")
			defer target.Close()
			return r.Link(target, "dl")
		}, func(d string) error { return unix.Link(d+"/d", d+"/dl") }},
		{"link exists", func(t *testing.T, r p9.File) error {
			target := walk(t, r, "a.txt")
			defer target.Close()
			return r.Link(target, "e")
		}, func(d string) error { return unix.Link(d+"/a.txt", d+"/e") }},
		{"symlink", func(t *testing.T, r p9.File) error { _, err := r.Symlink("../../../etc/passwd", "t", 0, 0); return err },
			func(d string) error { return unix.Symlink("../../../etc/passwd", d+"/t") }},
		{"symlink exists", func(t *testing.T, r p9.File) error { _, err := r.Symlink("x", "a.txt", 0, 0); return err },
			func(d string) error { return unix.Symlink("x", d+"/a.txt") }},
		{"mknod fifo", func(t *testing.T, r p9.File) error {
			_, err := r.Mknod("fifo", p9.ModeNamedPipe|0o640, 0, 0, 0, 0)
			return err
		}, func(d string) error { return unix.Mknod(d+"/fifo", unix.S_IFIFO|0o640, 0) }},
		{"mknod socket", func(t *testing.T, r p9.File) error {
			_, err := r.Mknod("sock", p9.ModeSocket|0o600, 0, 0, 0, 0)
			return err
		}, func(d string) error { return unix.Mknod(d+"/sock", unix.S_IFSOCK|0o600, 0) }},
		{"mknod char device", func(t *testing.T, r p9.File) error {
			_, err := r.Mknod("null", p9.ModeCharacterDevice|0o666, 1, 3, 0, 0)
			return err
		}, func(d string) error { return unix.Mknod(d+"/null", unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))) }},
		{"mknod block device", func(t *testing.T, r p9.File) error {
			_, err := r.Mknod("blk", p9.ModeBlockDevice|0o660, 259, 70000, 0, 0)
			return err
		}, func(d string) error { return unix.Mknod(d+"/blk", unix.S_IFBLK|0o660, int(unix.Mkdev(259, 70000))) }},
		{"mknod exists", func(t *testing.T, r p9.File) error {
			_, err := r.Mknod("d", p9.ModeNamedPipe|0o600, 0, 0, 0, 0)
			return err
		}, func(d string) error { return unix.Mknod(d+"/d", unix.S_IFIFO|0o600, 0) }},
		{"chmod", func(t *testing.T, r p9.File) error {
			return p9Setattr(r, "a.txt", p9.SetAttrMask{Permissions: true}, p9.SetAttr{Permissions: 0o1711})
		}, func(d string) error { return unix.Chmod(d+"/a.txt", 0o1711) }},
		{"chmod symlink", func(t *testing.T, r p9.File) error {
			return p9Setattr(r, "s", p9.SetAttrMask{Permissions: true}, p9.SetAttr{Permissions: 0o600})
		}, func(d string) error { return unix.Fchmodat(unix.AT_FDCWD, d+"/s", 0o600, unix.AT_SYMLINK_NOFOLLOW) }},
		{"chown", func(t *testing.T, r p9.File) error {
			return p9Setattr(r, "d", p9.SetAttrMask{UID: true, GID: true}, p9.SetAttr{UID: 1000, GID: 2000})
		}, func(d string) error { return unix.Chown(d+"/d", 1000, 2000) }},
		{"chown group only", func(t *testing.T, r p9.File) error {
			return p9Setattr(r, "a.txt", p9.SetAttrMask{GID: true}, p9.SetAttr{GID: 77})
		}, func(d string) error { return unix.Chown(d+"/a.txt", -1, 77) }},
		{"lchown symlink", func(t *testing.T, r p9.File) error {
			return p9Setattr(r, "s", p9.SetAttrMask{UID: true, GID: true}, p9.SetAttr{UID: 5, GID: 6})
		}, func(d string) error { return unix.Lchown(d+"/s", 5, 6) }},
		{"truncate shrink", func(t *testing.T, r p9.File) error {
			return p9Setattr(r, "a.txt", p9.SetAttrMask{Size: true}, p9.SetAttr{Size: 2})
		}, func(d string) error { return unix.Truncate(d+"/a.txt", 2) }},
		{"truncate grow", func(t *testing.T, r p9.File) error {
			return p9Setattr(r, "a.txt", p9.SetAttrMask{Size: true}, p9.SetAttr{Size: 9})
		}, func(d string) error { return unix.Truncate(d+"/a.txt", 9) }},
		{"truncate dir", func(t *testing.T, r p9.File) error {
			return p9Setattr(r, "d", p9.SetAttrMask{Size: true}, p9.SetAttr{Size: 0})
		}, func(d string) error { return unix.Truncate(d+"/d", 0) }},
		{"truncate open file", func(t *testing.T, r p9.File) error {
			return p9Open(t, r, "a.txt", rdwr, func(f p9.File) error {
				return f.SetAttr(p9.SetAttrMask{Size: true}, p9.SetAttr{Size: 1})
			})
		}, func(d string) error { return unix.Truncate(d+"/a.txt", 1) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			served, plain := t.TempDir(), t.TempDir()
			baseTree(t, served)
			baseTree(t, plain)
			_, _, root := connect(t, served)
			got := errnoOf(tc.p9(t, root))
			want := errnoOf(tc.sys(plain))
			if got != want {
				t.Errorf("errno: 9p %s, syscall %s", errName(got), errName(want))
			}
			if g, w := snapshot(t, served), snapshot(t, plain); g != w {
				t.Errorf("trees differ:\n9p:\n%s\nsyscall:\n%s", g, w)
			}
		})
	}
}

// TestGetAttrMatchesStatx compares getattr and walkgetattr with statx on
// every kind of file.
func TestGetAttrMatchesStatx(t *testing.T) {
	dir := t.TempDir()
	baseTree(t, dir)
	must(t, unix.Mkfifo(filepath.Join(dir, "fifo"), 0o600))
	must(t, unix.Mknod(filepath.Join(dir, "chr"), unix.S_IFCHR|0o600, int(unix.Mkdev(4, 64))))
	must(t, os.WriteFile(filepath.Join(dir, "big"), make([]byte, 100000), 0o644))
	_, _, root := connect(t, dir)
	for _, name := range []string{"", "a.txt", "d", "d/x", "s", "fifo", "chr", "big"} {
		var st unix.Statx_t
		must(t, unix.Statx(unix.AT_FDCWD, filepath.Join(dir, name), unix.AT_SYMLINK_NOFOLLOW, unix.STATX_ALL, &st))
		wantValid, want := attrFromStatx(&st)
		if !wantValid.BTime {
			t.Logf("%s: no birth time on this filesystem", name)
		}
		check := func(how string, qid p9.QID, valid p9.AttrMask, got p9.Attr) {
			t.Helper()
			if got != want || valid != wantValid {
				t.Errorf("%s %q:\n got %v %v\nwant %v %v", how, name, valid, got, wantValid, want)
			}
			if qid.Path != st.Ino || qid.Type != p9.FileMode(st.Mode).QIDType() {
				t.Errorf("%s %q: qid %v, want path %d type %v", how, name, qid, st.Ino, p9.FileMode(st.Mode).QIDType())
			}
		}
		f := walk(t, root, name)
		qid, valid, attr, err := f.GetAttr(p9.AttrMaskAll)
		must(t, err)
		check("getattr", qid, valid, attr)
		f.Close()
		if name == "" {
			continue
		}
		d, base := parentOf(t, root, name)
		qids, f2, valid, attr, err := d.WalkGetAttr([]string{base})
		must(t, err)
		check("walkgetattr", qids[0], valid, attr)
		f2.Close()
		d.Close()
	}
	// Readlink, also of a long target.
	long := strings.Repeat("t/", 1500)
	must(t, os.Symlink(long, filepath.Join(dir, "long")))
	for name, want := range map[string]string{"s": "a.txt", "long": long} {
		f := walk(t, root, name)
		got, err := f.Readlink()
		f.Close()
		if err != nil || got != want {
			t.Errorf("readlink %s = %d bytes, %v; want %d bytes", name, len(got), err, len(want))
		}
	}
	// Spot-check the fields against what we set up.
	f := walk(t, root, "chr")
	defer f.Close()
	_, _, a, err := f.GetAttr(p9.AttrMaskAll)
	must(t, err)
	if unix.Major(uint64(a.RDev)) != 4 || unix.Minor(uint64(a.RDev)) != 64 {
		t.Errorf("rdev %d:%d, want 4:64", unix.Major(uint64(a.RDev)), unix.Minor(uint64(a.RDev)))
	}
}

// TestSetAttrTimes sets times to given values (nanoseconds kept) and to
// now, on a file and on a symlink itself.
func TestSetAttrTimes(t *testing.T) {
	dir := t.TempDir()
	baseTree(t, dir)
	_, _, root := connect(t, dir)
	for _, name := range []string{"a.txt", "s", "d"} {
		must(t, p9Setattr(root, name, p9.SetAttrMask{ATime: true, MTime: true, ATimeNotSystemTime: true, MTimeNotSystemTime: true},
			p9.SetAttr{ATimeSeconds: 1000, ATimeNanoSeconds: 123456789, MTimeSeconds: 2000, MTimeNanoSeconds: 987654321}))
		var st unix.Stat_t
		must(t, unix.Lstat(filepath.Join(dir, name), &st))
		if st.Atim != (unix.Timespec{Sec: 1000, Nsec: 123456789}) || st.Mtim != (unix.Timespec{Sec: 2000, Nsec: 987654321}) {
			t.Errorf("%s: atime %v mtime %v", name, st.Atim, st.Mtim)
		}
		// mtime only: atime stays.
		must(t, p9Setattr(root, name, p9.SetAttrMask{MTime: true, MTimeNotSystemTime: true}, p9.SetAttr{MTimeSeconds: 3000, MTimeNanoSeconds: 1}))
		must(t, unix.Lstat(filepath.Join(dir, name), &st))
		if st.Atim.Sec != 1000 || st.Mtim != (unix.Timespec{Sec: 3000, Nsec: 1}) {
			t.Errorf("%s after mtime-only: atime %v mtime %v", name, st.Atim, st.Mtim)
		}
		// now.
		var before unix.Timespec
		must(t, unix.ClockGettime(unix.CLOCK_REALTIME, &before))
		must(t, p9Setattr(root, name, p9.SetAttrMask{ATime: true, MTime: true}, p9.SetAttr{ATimeSeconds: 5, MTimeSeconds: 5}))
		must(t, unix.Lstat(filepath.Join(dir, name), &st))
		if st.Atim.Sec < before.Sec-1 || st.Mtim.Sec < before.Sec-1 {
			t.Errorf("%s: set to now gave atime %v mtime %v (now %v)", name, st.Atim, st.Mtim, before)
		}
	}
}

// TestCreateIdentityAndUmask: created inodes get the client's uid/gid and
// exactly the requested permissions even with a server umask of 022.
func TestCreateIdentityAndUmask(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	dir := t.TempDir()
	_, _, root := connect(t, dir)
	must(t, p9Create(t, root, "f", p9.WriteOnly, 0o1755, "x"))
	_, err := root.Mkdir("dir", 0o1777, 1234, 5678)
	must(t, err)
	_, err = root.Symlink("f", "link", 1234, 5678)
	must(t, err)
	_, err = root.Mknod("fifo", p9.ModeNamedPipe|0o666, 0, 0, 1234, 5678)
	must(t, err)
	d := walk(t, root, "")
	_, _, _, err = d.Create("owned", p9.WriteOnly, 0o750, 1234, 5678)
	must(t, err)
	d.Close()
	for _, c := range []struct {
		name     string
		mode     uint32
		uid, gid uint32
	}{
		{"f", unix.S_IFREG | 0o1755, 0, 0},
		{"dir", unix.S_IFDIR | 0o1777, 1234, 5678},
		{"link", unix.S_IFLNK | 0o777, 1234, 5678},
		{"fifo", unix.S_IFIFO | 0o666, 1234, 5678},
		{"owned", unix.S_IFREG | 0o750, 1234, 5678},
	} {
		var st unix.Stat_t
		must(t, unix.Lstat(filepath.Join(dir, c.name), &st))
		if st.Mode != c.mode || st.Uid != c.uid || st.Gid != c.gid {
			t.Errorf("%s: mode %o uid %d gid %d, want %o %d %d", c.name, st.Mode, st.Uid, st.Gid, c.mode, c.uid, c.gid)
		}
	}
}

// TestSetgidDirectoryGroup: in a set-group-ID directory every new entry
// (file, directory, symlink, fifo) takes the directory's group, not the
// gid the client sent, as the same system calls give on a plain
// directory; elsewhere the client's gid applies.
func TestSetgidDirectoryGroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files other owners")
	}
	const dirGID, clientUID, clientGID = 4321, 1234, 5678
	served, plain := t.TempDir(), t.TempDir()
	for _, top := range []string{served, plain} {
		for _, d := range []struct {
			name string
			mode uint32
		}{{"sg", 0o2775}, {"nosg", 0o775}} {
			p := filepath.Join(top, d.name)
			must(t, os.Mkdir(p, 0o700))
			must(t, os.Chown(p, 0, dirGID))
			must(t, unix.Chmod(p, d.mode))
		}
	}
	_, _, root := connect(t, served)
	for _, c := range []struct {
		name string
		p9   func(d p9.File, name string) error
		sys  func(path string) error
		mode uint32 // file type and permissions in a set-group-ID directory
	}{
		{"file",
			func(d p9.File, name string) error {
				_, _, _, err := d.Create(name, p9.WriteOnly, 0o640, clientUID, clientGID)
				return err
			},
			func(p string) error { return sysOpenWritePerm(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o640, "", 0) },
			unix.S_IFREG | 0o640},
		{"dir",
			func(d p9.File, name string) error {
				_, err := d.Mkdir(name, 0o750, clientUID, clientGID)
				return err
			},
			func(p string) error { return unix.Mkdir(p, 0o750) },
			unix.S_IFDIR | unix.S_ISGID | 0o750}, // inherits set-group-ID too
		{"symlink",
			func(d p9.File, name string) error {
				_, err := d.Symlink("target", name, clientUID, clientGID)
				return err
			},
			func(p string) error { return unix.Symlink("target", p) },
			unix.S_IFLNK | 0o777},
		{"fifo",
			func(d p9.File, name string) error {
				_, err := d.Mknod(name, p9.ModeNamedPipe|0o600, 0, 0, clientUID, clientGID)
				return err
			},
			func(p string) error { return unix.Mknod(p, unix.S_IFIFO|0o600, 0) },
			unix.S_IFIFO | 0o600},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, dir := range []string{"sg", "nosg"} {
				d := walk(t, root, dir)
				err := c.p9(d, c.name)
				d.Close()
				must(t, err)
				var got, want unix.Stat_t
				must(t, unix.Lstat(filepath.Join(served, dir, c.name), &got))
				if dir == "nosg" {
					if got.Uid != clientUID || got.Gid != clientGID {
						t.Errorf("%s: owner %d:%d, want the client's %d:%d", dir, got.Uid, got.Gid, clientUID, clientGID)
					}
					continue
				}
				must(t, c.sys(filepath.Join(plain, dir, c.name)))
				must(t, unix.Lstat(filepath.Join(plain, dir, c.name), &want))
				if want.Gid != dirGID || want.Mode != c.mode {
					t.Fatalf("plain directory: gid %d mode %o, test expects %d %o", want.Gid, want.Mode, dirGID, c.mode)
				}
				if got.Gid != want.Gid || got.Mode != want.Mode || got.Uid != clientUID {
					t.Errorf("%s: uid %d gid %d mode %o, want uid %d gid %d mode %o", dir, got.Uid, got.Gid, got.Mode, clientUID, want.Gid, want.Mode)
				}
			}
		})
	}
}

// defaultACL encodes a minimal POSIX ACL (system.posix_acl_default):
// owner, group and other permissions (0-7 each).
func defaultACL(user, group, other uint16) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 2) // POSIX_ACL_XATTR_VERSION
	for _, e := range [][2]uint16{{0x01, user}, {0x04, group}, {0x20, other}} {
		b = binary.LittleEndian.AppendUint16(b, e[0])
		b = binary.LittleEndian.AppendUint16(b, e[1])
		b = binary.LittleEndian.AppendUint32(b, ^uint32(0))
	}
	return b
}

// TestDefaultACLPermissions: in a directory with a default POSIX ACL a
// new entry gets the permissions the filesystem derives from the ACL and
// the requested mode (never wider), exactly as the same system calls give
// on a plain directory with that ACL.
func TestDefaultACLPermissions(t *testing.T) {
	served, plain := t.TempDir(), t.TempDir()
	acl := defaultACL(7, 5, 0) // u::rwx g::r-x o::---
	for _, top := range []string{served, plain} {
		p := filepath.Join(top, "acl")
		must(t, os.Mkdir(p, 0o755))
		if err := unix.Setxattr(p, "system.posix_acl_default", acl, 0); err != nil {
			if err == unix.EOPNOTSUPP {
				t.Skipf("%s has no POSIX ACLs: %v", top, err)
			}
			t.Fatalf("setting default ACL: %v", err)
		}
	}
	_, _, root := connect(t, served)
	uid := uint32(0)
	if os.Geteuid() == 0 {
		uid = 1234 // also through the chown of a new entry
	}
	for _, c := range []struct {
		name string
		p9   func(d p9.File, name string) error
		sys  func(path string) error
	}{
		{"file",
			func(d p9.File, name string) error {
				_, _, _, err := d.Create(name, p9.WriteOnly, 0o664, p9.UID(uid), 0)
				return err
			},
			func(p string) error { return sysOpenWritePerm(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o664, "", 0) }},
		{"dir",
			func(d p9.File, name string) error {
				_, err := d.Mkdir(name, 0o777, p9.UID(uid), 0)
				return err
			},
			func(p string) error { return unix.Mkdir(p, 0o777) }},
		{"sticky-dir",
			func(d p9.File, name string) error {
				_, err := d.Mkdir(name, 0o1777, p9.UID(uid), 0)
				return err
			},
			func(p string) error { return unix.Mkdir(p, 0o1777) }},
		{"fifo",
			func(d p9.File, name string) error {
				_, err := d.Mknod(name, p9.ModeNamedPipe|0o666, 0, 0, p9.UID(uid), 0)
				return err
			},
			func(p string) error { return unix.Mknod(p, unix.S_IFIFO|0o666, 0) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := walk(t, root, "acl")
			err := c.p9(d, c.name)
			d.Close()
			must(t, err)
			must(t, c.sys(filepath.Join(plain, "acl", c.name)))
			var got, want unix.Stat_t
			must(t, unix.Lstat(filepath.Join(served, "acl", c.name), &got))
			must(t, unix.Lstat(filepath.Join(plain, "acl", c.name), &want))
			if want.Mode&0o007 != 0 {
				t.Fatalf("plain directory: mode %o gives others access despite the ACL", want.Mode)
			}
			if got.Mode != want.Mode || got.Uid != uid {
				t.Errorf("mode %o uid %d, want %o %d", got.Mode, got.Uid, want.Mode, uid)
			}
		})
	}
}

// TestSetAttrCtimeOnly: a Tsetattr asking only for ctime (what Linux's
// v9fs client sends for chown(path, -1, -1)) sets ctime to now and
// changes nothing else, like the system call on a plain file.
func TestSetAttrCtimeOnly(t *testing.T) {
	dir := t.TempDir()
	baseTree(t, dir)
	_, _, root := connect(t, dir)
	for _, name := range []string{"a.txt", "d", "s"} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, name)
			old := unix.Timespec{Sec: 1000, Nsec: 5}
			must(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{old, old}, unix.AT_SYMLINK_NOFOLLOW))
			var before, after unix.Stat_t
			must(t, unix.Lstat(p, &before))
			time.Sleep(20 * time.Millisecond) // past the kernel clock's granularity
			must(t, p9Setattr(root, name, p9.SetAttrMask{CTime: true}, p9.SetAttr{}))
			must(t, unix.Lstat(p, &after))
			if !timespecAfter(after.Ctim, before.Ctim) {
				t.Errorf("ctime %v, not after %v", after.Ctim, before.Ctim)
			}
			if after.Mode != before.Mode || after.Uid != before.Uid || after.Gid != before.Gid ||
				after.Size != before.Size || after.Atim != old || after.Mtim != old {
				t.Errorf("other attributes changed: before %+v after %+v", before, after)
			}
		})
	}
	t.Run("read-only", func(t *testing.T) {
		_, _, roRoot := connect(t, dir, WithReadOnly())
		if err := p9Setattr(roRoot, "a.txt", p9.SetAttrMask{CTime: true}, p9.SetAttr{}); errnoOf(err) != int(unix.EROFS) {
			t.Errorf("got %v, want EROFS", err)
		}
	})
}

func timespecAfter(a, b unix.Timespec) bool {
	return a.Sec > b.Sec || a.Sec == b.Sec && a.Nsec > b.Nsec
}

// TestReadWrite checks reads and writes at offsets, EOF, a 1 MiB read in
// one request, and that opening a symlink is refused.
func TestReadWrite(t *testing.T) {
	dir := t.TempDir()
	data := make([]byte, 3<<20)
	for i := range data {
		data[i] = byte(i*7 + i>>11)
	}
	must(t, os.WriteFile(filepath.Join(dir, "big"), data, 0o644))
	must(t, os.Symlink("big", filepath.Join(dir, "s")))
	_, _, root := connect(t, dir)
	f := walk(t, root, "big")
	defer f.Close()
	if _, _, err := f.Open(p9.ReadWrite); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ off, n int }{{0, 1 << 20}, {12345, 70000}, {len(data) - 10, 10}, {1<<20 - 1, 1<<20 + 2}} {
		buf := make([]byte, c.n)
		n, err := f.ReadAt(buf, int64(c.off))
		if err != nil || n != c.n || string(buf) != string(data[c.off:c.off+c.n]) {
			t.Errorf("ReadAt(%d, %d) = %d, %v; data match %v", c.off, c.n, n, err, string(buf[:n]) == string(data[c.off:c.off+n]))
		}
	}
	n, err := f.ReadAt(make([]byte, 100), int64(len(data)))
	if n != 0 {
		t.Errorf("read at EOF = %d, %v", n, err)
	}
	if _, err := f.WriteAt([]byte("hello"), int64(len(data)+5)); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "big"))
	if len(got) != len(data)+10 || string(got[len(data)+5:]) != "hello" || got[len(data)] != 0 {
		t.Errorf("after write past EOF: size %d, tail %q", len(got), got[len(data):])
	}
	// Directly: opening a symlink fails with ELOOP (the library refuses
	// earlier, with EINVAL).
	srv := newServer(t, dir)
	rf, err := srv.fs.Attach()
	must(t, err)
	defer rf.Close()
	_, sf, err := rf.Walk([]string{"s"})
	must(t, err)
	defer sf.Close()
	if _, _, err := sf.Open(p9.ReadOnly); errnoOf(err) != int(unix.ELOOP) {
		t.Errorf("open symlink: %v, want ELOOP", err)
	}
}

func TestStatFS(t *testing.T) {
	dir := t.TempDir()
	_, _, root := connect(t, dir)
	got, err := root.StatFS()
	must(t, err)
	var want unix.Statfs_t
	must(t, unix.Statfs(dir, &want))
	if got.Type != uint32(want.Type) || got.BlockSize != uint32(want.Bsize) || got.Blocks != want.Blocks ||
		got.Files != want.Files || got.NameLength != uint32(want.Namelen) || got.Blocks == 0 {
		t.Errorf("statfs %+v, want %+v", got, want)
	}
}

func TestFsync(t *testing.T) {
	dir := t.TempDir()
	baseTree(t, dir)
	_, _, root := connect(t, dir)
	for _, name := range []string{"a.txt", "d"} {
		if err := p9Open(t, root, name, p9.ReadOnly, func(f p9.File) error { return f.FSync() }); err != nil {
			t.Errorf("fsync %s: %v", name, err)
		}
	}
}

// TestLocks: locks on two fids of one file conflict like locks of two
// processes (they are OFD locks), and unlocking releases them. (The
// library's client sends Tlock without its fid, so this uses raw 9P.)
func TestLocks(t *testing.T) {
	dir := t.TempDir()
	baseTree(t, dir)
	rc := newRawClient(t, newServer(t, dir), 65536)
	rc.attach(1)
	for _, fid := range []uint32{2, 3} {
		must(t, rc.walk(1, fid, "a.txt"))
		must(t, rc.lopen(fid, uint32(p9.ReadWrite)))
	}
	const a, b = 2, 3
	for _, step := range []struct {
		fid           uint32
		typ           p9.LockType
		flags         p9.LockFlags
		start, length uint64
		want          p9.LockStatus
	}{
		{a, p9.WriteLock, 0, 0, 10, p9.LockStatusOK},
		{b, p9.WriteLock, 0, 5, 1, p9.LockStatusBlocked},
		{b, p9.ReadLock, p9.LockFlagsBlock, 0, 0, p9.LockStatusBlocked},
		{b, p9.WriteLock, 0, 10, 5, p9.LockStatusOK}, // no overlap
		{a, p9.Unlock, 0, 0, 10, p9.LockStatusOK},
		{b, p9.ReadLock, 0, 0, 5, p9.LockStatusOK},
		{a, p9.ReadLock, 0, 0, 5, p9.LockStatusOK}, // shared
		{a, p9.WriteLock, 0, 0, 0, p9.LockStatusBlocked},
	} {
		var w wbuf
		w.u32(step.fid)
		w.u8(uint8(step.typ))
		w.u32(uint32(step.flags))
		w.u64(step.start)
		w.u64(step.length)
		w.u32(42)
		w.str("host")
		r, err := rc.call(52, w.b)
		must(t, err)
		if got := p9.LockStatus(r.u8()); got != step.want {
			t.Errorf("fid %d lock %v [%d,+%d) = %v, want %v", step.fid, step.typ, step.start, step.length, got, step.want)
		}
	}
	// The locks are real on the server: a local OFD lock conflicts.
	fd, err := unix.Open(filepath.Join(dir, "a.txt"), unix.O_RDWR, 0)
	must(t, err)
	defer unix.Close(fd)
	lk := unix.Flock_t{Type: unix.F_WRLCK, Start: 0, Len: 5}
	if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk); err != unix.EAGAIN {
		t.Errorf("local lock over a 9P read lock: %v, want EAGAIN", err)
	}
	// Tgetlock is not carried by the 9P library: the client gets an
	// error (EIO) and the connection goes on.
	var w wbuf
	w.u32(a)
	w.u8(uint8(p9.WriteLock))
	w.u64(0)
	w.u64(0)
	w.u32(42)
	w.str("host")
	if _, err := rc.call(54, w.b); errnoOf(err) != int(unix.EIO) {
		t.Errorf("Tgetlock: %v, want EIO", err)
	}
	// Clunking the fids releases their locks.
	must(t, rc.clunk(a))
	must(t, rc.clunk(b))
	if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk); err != nil {
		t.Errorf("local lock after clunk: %v", err)
	}
}
