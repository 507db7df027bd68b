package client

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// runner performs file operations under root and writes a transcript of
// their results and errnos, so the same sequence run on the mount and on
// a plain directory can be compared.
type runner struct {
	root string
	out  strings.Builder
}

func (r *runner) p(name string) string { return filepath.Join(r.root, name) }

func errName(err error) string {
	if err == nil {
		return "ok"
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return unix.ErrnoName(e)
	}
	return "error: " + err.Error()
}

func (r *runner) log(op string, err error, format string, args ...any) {
	fmt.Fprintf(&r.out, "%s -> %s", op, errName(err))
	if err == nil && format != "" {
		fmt.Fprintf(&r.out, " "+format, args...)
	}
	r.out.WriteByte('\n')
}

func (r *runner) write(name string, flags int, data string) {
	f, err := os.OpenFile(r.p(name), flags, 0o644)
	if err == nil {
		_, err = f.WriteString(data)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	r.log(fmt.Sprintf("write %s %#o %q", name, flags, data), err, "")
}

func (r *runner) writeAt(name string, off int64, data string) {
	f, err := os.OpenFile(r.p(name), os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteAt([]byte(data), off)
		f.Close()
	}
	r.log(fmt.Sprintf("writeat %s %d", name, off), err, "")
}

func (r *runner) read(name string) {
	b, err := os.ReadFile(r.p(name))
	r.log("read "+name, err, "%q", b)
}

func (r *runner) mkdir(name string, mode os.FileMode) {
	r.log("mkdir "+name, os.Mkdir(r.p(name), mode), "")
}

func (r *runner) unlink(name string) { r.log("unlink "+name, syscall.Unlink(r.p(name)), "") }
func (r *runner) rmdir(name string)  { r.log("rmdir "+name, syscall.Rmdir(r.p(name)), "") }

func (r *runner) rename(a, b string, flags uint) {
	r.log(fmt.Sprintf("rename %s %s %d", a, b, flags), unix.Renameat2(unix.AT_FDCWD, r.p(a), unix.AT_FDCWD, r.p(b), flags), "")
}

func (r *runner) symlink(target, name string) {
	r.log("symlink "+name, os.Symlink(target, r.p(name)), "")
}

func (r *runner) readlink(name string) {
	t, err := os.Readlink(r.p(name))
	r.log("readlink "+name, err, "%q", t)
}

func (r *runner) link(a, b string) { r.log("link "+a+" "+b, os.Link(r.p(a), r.p(b)), "") }

func (r *runner) stat(name string, times bool) {
	var st unix.Stat_t
	err := unix.Lstat(r.p(name), &st)
	if times {
		r.log("stat "+name, err, "mode=%#o size=%d nlink=%d mtime=%d.%09d", st.Mode, st.Size, st.Nlink, st.Mtim.Sec, st.Mtim.Nsec)
	} else {
		r.log("stat "+name, err, "mode=%#o size=%d nlink=%d", st.Mode, st.Size, st.Nlink)
	}
}

func (r *runner) truncate(name string, size int64) {
	r.log(fmt.Sprintf("truncate %s %d", name, size), os.Truncate(r.p(name), size), "")
}

func (r *runner) chmod(name string, mode uint32) {
	r.log(fmt.Sprintf("chmod %s %#o", name, mode), syscall.Chmod(r.p(name), mode), "")
}

func (r *runner) utimes(name string, sec int64) {
	ts := []unix.Timespec{{Sec: sec, Nsec: 123456789}, {Sec: sec + 1, Nsec: 987654321}}
	r.log(fmt.Sprintf("utimes %s %d", name, sec), unix.UtimesNanoAt(unix.AT_FDCWD, r.p(name), ts, unix.AT_SYMLINK_NOFOLLOW), "")
}

func (r *runner) mkfifo(name string) { r.log("mkfifo "+name, unix.Mkfifo(r.p(name), 0o640), "") }

func (r *runner) readdir(name string) {
	ents, err := os.ReadDir(r.p(name))
	var names []string
	for _, e := range ents {
		names = append(names, fmt.Sprintf("%s:%v", e.Name(), e.Type()))
	}
	r.log("readdir "+name, err, "%v", names)
}

func (r *runner) sameIno(a, b string) {
	var sa, sb unix.Stat_t
	err := unix.Lstat(r.p(a), &sa)
	if err == nil {
		err = unix.Lstat(r.p(b), &sb)
	}
	r.log("sameino "+a+" "+b, err, "%v", sa.Ino == sb.Ino)
}

func (r *runner) setxattr(name, attr, val string, flags int) {
	r.log(fmt.Sprintf("setxattr %s %s %d", name, attr, flags), unix.Lsetxattr(r.p(name), attr, []byte(val), flags), "")
}

func (r *runner) getxattr(name, attr string, size int) {
	buf := make([]byte, size)
	n, err := unix.Lgetxattr(r.p(name), attr, buf)
	if size == 0 {
		r.log(fmt.Sprintf("getxattr %s %s size", name, attr), err, "%d", n)
		return
	}
	r.log(fmt.Sprintf("getxattr %s %s %d", name, attr, size), err, "%q", buf[:max(n, 0)])
}

func (r *runner) listxattr(name string) {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(r.p(name), buf)
	var names []string
	if err == nil {
		for _, s := range bytes.Split(buf[:n], []byte{0}) {
			if len(s) > 0 {
				names = append(names, string(s))
			}
		}
		sort.Strings(names)
	}
	r.log("listxattr "+name, err, "%v", names)
}

func (r *runner) removexattr(name, attr string) {
	r.log("removexattr "+name+" "+attr, unix.Lremovexattr(r.p(name), attr), "")
}

// rwUnlinked uses a file after unlinking it. (ftruncate, fchmod and
// futimens of an unlinked file are refused by the p9 library's server.)
func (r *runner) rwUnlinked(name string) {
	f, err := os.OpenFile(r.p(name), os.O_RDWR|os.O_CREATE, 0o600)
	if err == nil {
		f.WriteString("0123456789")
		err = os.Remove(r.p(name))
		if err == nil {
			_, err = f.WriteAt([]byte("abc"), 12)
		}
		if err == nil {
			b := make([]byte, 20)
			var n int
			n, err = f.ReadAt(b, 0)
			if err != nil && n > 0 {
				err = nil
			}
			fmt.Fprintf(&r.out, "read %q\n", b[:n])
		}
		if err == nil {
			var st unix.Stat_t
			err = unix.Fstat(int(f.Fd()), &st)
			if err == nil {
				fmt.Fprintf(&r.out, "fstat size=%d nlink=%d\n", st.Size, st.Nlink)
			}
		}
		f.Close()
	}
	r.log("rw-unlinked "+name, err, "")
}

// snapshot describes the tree under root: types, permissions, sizes,
// contents, link counts and symlink targets.
func snapshot(t testing.TB, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s mode=%#o", rel, st.Mode)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " size=%d nlink=%d data=%q", st.Size, st.Nlink, data)
		case unix.S_IFLNK:
			target, _ := os.Readlink(p)
			fmt.Fprintf(&b, " -> %q", target)
		case unix.S_IFDIR:
			fmt.Fprintf(&b, " nlink=%d", st.Nlink)
		}
		b.WriteByte('\n')
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", root, err)
	}
	return b.String()
}

var diffCases = []struct {
	name string
	run  func(r *runner)
}{
	{"create write read", func(r *runner) {
		r.write("a", os.O_CREATE|os.O_WRONLY, "hello")
		r.read("a")
		r.stat("a", false)
		r.write("a", os.O_WRONLY|os.O_TRUNC, "hi")
		r.read("a")
	}},
	{"exclusive create", func(r *runner) {
		r.write("a", os.O_CREATE|os.O_WRONLY, "x")
		r.write("a", os.O_CREATE|os.O_EXCL|os.O_WRONLY, "y")
		r.read("a")
	}},
	{"missing files", func(r *runner) {
		r.read("nope")
		r.unlink("nope")
		r.rmdir("nope")
		r.stat("nope/deeper", false)
		r.write("nope/x", os.O_CREATE|os.O_WRONLY, "z")
	}},
	{"directories", func(r *runner) {
		r.mkdir("d", 0o755)
		r.mkdir("d", 0o755)
		r.write("d/f", os.O_CREATE|os.O_WRONLY, "x")
		r.rmdir("d")
		r.unlink("d")
		r.rmdir("d/f")
		r.stat("d", false)
		r.unlink("d/f")
		r.rmdir("d")
		r.stat("d", false)
	}},
	{"rename over file", func(r *runner) {
		r.write("a", os.O_CREATE|os.O_WRONLY, "aaa")
		r.write("b", os.O_CREATE|os.O_WRONLY, "b")
		r.rename("a", "b", 0)
		r.read("a")
		r.read("b")
	}},
	{"rename errors", func(r *runner) {
		r.mkdir("d1", 0o755)
		r.mkdir("d2", 0o755)
		r.write("d2/f", os.O_CREATE|os.O_WRONLY, "x")
		r.write("f", os.O_CREATE|os.O_WRONLY, "x")
		r.rename("d1", "d2", 0)
		r.rename("d1", "f", 0)
		r.rename("f", "d1", 0)
		r.rename("d1", "d1/sub", 0)
		r.rename("f", "d2/f", unix.RENAME_NOREPLACE)
		r.rename("f", "d2/g", unix.RENAME_NOREPLACE)
		r.rename("d1", "d3", 0)
		r.readdir(".")
	}},
	{"symlinks", func(r *runner) {
		r.symlink("target/../x", "l")
		r.readlink("l")
		r.stat("l", false)
		r.read("l")
		r.write("x", os.O_CREATE|os.O_WRONLY, "via link")
		r.read("l")
		r.symlink("x", "l")
	}},
	{"hard links", func(r *runner) {
		r.write("a", os.O_CREATE|os.O_WRONLY, "shared")
		r.link("a", "b")
		r.stat("a", false)
		r.sameIno("a", "b")
		r.write("b", os.O_WRONLY|os.O_APPEND, "!")
		r.read("a")
		r.unlink("a")
		r.stat("b", false)
		r.link("b", "b")
		r.mkdir("d", 0o755)
		r.link("d", "e")
	}},
	{"truncate and sparse", func(r *runner) {
		r.write("a", os.O_CREATE|os.O_WRONLY, "0123456789")
		r.truncate("a", 4)
		r.read("a")
		r.truncate("a", 8)
		r.read("a")
		r.writeAt("a", 20, "end")
		r.read("a")
		r.stat("a", false)
	}},
	{"modes and times", func(r *runner) {
		r.write("a", os.O_CREATE|os.O_WRONLY, "x")
		r.chmod("a", 0o600)
		r.stat("a", false)
		r.chmod("a", 0o4755)
		r.stat("a", false)
		r.chmod("a", 0o2711)
		r.stat("a", false)
		r.mkdir("d", 0o700)
		r.chmod("d", 0o1777)
		r.stat("d", false)
		r.utimes("a", 1_000_000_000)
		r.stat("a", true)
		r.utimes("d", 1_500_000_000)
		r.stat("d", true)
	}},
	{"special files", func(r *runner) {
		r.mkfifo("fifo")
		r.stat("fifo", false)
		r.mkfifo("fifo")
	}},
	{"append", func(r *runner) {
		r.write("log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, "one\n")
		r.write("log", os.O_WRONLY|os.O_APPEND, "two\n")
		r.write("log", os.O_RDWR|os.O_APPEND, "three\n")
		r.read("log")
	}},
	{"names", func(r *runner) {
		r.write(strings.Repeat("n", 255), os.O_CREATE|os.O_WRONLY, "ok")
		r.write(strings.Repeat("n", 256), os.O_CREATE|os.O_WRONLY, "too long")
		r.mkdir("sp ace", 0o755)
		r.write("sp ace/ünï", os.O_CREATE|os.O_WRONLY, "utf8")
		r.readdir("sp ace")
	}},
	{"xattrs", func(r *runner) {
		r.write("a", os.O_CREATE|os.O_WRONLY, "x")
		r.listxattr("a")
		r.getxattr("a", "user.missing", 10)
		r.setxattr("a", "user.one", "1", 0)
		r.setxattr("a", "user.two", "second value", 0)
		r.setxattr("a", "user.one", "again", unix.XATTR_CREATE)
		r.setxattr("a", "user.three", "3", unix.XATTR_REPLACE)
		r.getxattr("a", "user.two", 0)
		r.getxattr("a", "user.two", 3)
		r.getxattr("a", "user.two", 100)
		r.listxattr("a")
		r.removexattr("a", "user.one")
		r.removexattr("a", "user.one")
		r.getxattr("a", "user.one", 10)
		r.listxattr("a")
	}},
	{"unlinked open file", func(r *runner) {
		r.rwUnlinked("tmp")
		r.readdir(".")
	}},
}

// diffRoots returns a fresh directory on the mount and a plain one.
func diffRoots(t *testing.T, e *env, name string) (string, string) {
	sub := strings.ReplaceAll(name, " ", "_")
	if err := os.Mkdir(e.path(sub), 0o755); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(t.TempDir(), sub)
	if err := os.Mkdir(plain, 0o755); err != nil {
		t.Fatal(err)
	}
	return e.path(sub), plain
}

func compareRuns(t *testing.T, fuseRoot, plainRoot string, run func(r *runner)) {
	t.Helper()
	rf, rp := &runner{root: fuseRoot}, &runner{root: plainRoot}
	run(rf)
	run(rp)
	if got, want := rf.out.String(), rp.out.String(); got != want {
		t.Errorf("transcripts differ\n--- mount:\n%s--- plain:\n%s", got, want)
	}
	if got, want := snapshot(t, fuseRoot), snapshot(t, plainRoot); got != want {
		t.Errorf("trees differ\n--- mount:\n%s--- plain:\n%s", got, want)
	}
}

func TestDifferential(t *testing.T) {
	e := mountEnv(t, "")
	for _, tc := range diffCases {
		t.Run(tc.name, func(t *testing.T) {
			fr, pr := diffRoots(t, e, tc.name)
			compareRuns(t, fr, pr, tc.run)
		})
	}
}

func TestDifferentialRandom(t *testing.T) {
	e := mountEnv(t, "")
	fr, pr := diffRoots(t, e, "random")
	names := []string{"a", "b", "c", "d/a", "d/b", "d/e/f", "e", "d"}
	dirs := []string{".", "d", "d/e"}
	run := func(r *runner) {
		rng := rand.New(rand.NewSource(20261121))
		for i := 0; i < 600; i++ {
			a := names[rng.Intn(len(names))]
			b := names[rng.Intn(len(names))]
			switch rng.Intn(14) {
			case 0, 1:
				r.write(a, os.O_CREATE|os.O_WRONLY|[]int{0, os.O_TRUNC, os.O_APPEND, os.O_EXCL}[rng.Intn(4)], fmt.Sprint(i))
			case 2:
				r.read(a)
			case 3:
				r.mkdir(a, 0o755)
			case 4:
				r.unlink(a)
			case 5:
				r.rmdir(a)
			case 6:
				r.rename(a, b, []uint{0, unix.RENAME_NOREPLACE}[rng.Intn(2)])
			case 7:
				r.link(a, b)
			case 8:
				r.symlink(b, a)
			case 9:
				r.stat(a, false)
			case 10:
				r.truncate(a, int64(rng.Intn(20)))
			case 11:
				r.chmod(a, []uint32{0o644, 0o600, 0o755, 0o700}[rng.Intn(4)])
			case 12:
				r.readdir(dirs[rng.Intn(len(dirs))])
			case 13:
				r.writeAt(a, int64(rng.Intn(30)), "xyz")
			}
		}
	}
	compareRuns(t, fr, pr, run)
}

// TestRenameExchange: 9P2000.L has no exchange; the mount says EINVAL.
func TestRenameExchange(t *testing.T) {
	e := mountEnv(t, "")
	os.WriteFile(e.path("a"), []byte("a"), 0o644)
	os.WriteFile(e.path("b"), []byte("b"), 0o644)
	err := unix.Renameat2(unix.AT_FDCWD, e.path("a"), unix.AT_FDCWD, e.path("b"), unix.RENAME_EXCHANGE)
	if !errors.Is(err, unix.EINVAL) {
		t.Errorf("RENAME_EXCHANGE = %v, want EINVAL", err)
	}
	if b, _ := os.ReadFile(e.path("b")); string(b) != "b" {
		t.Errorf("b = %q", b)
	}
}

var _ = time.Second
