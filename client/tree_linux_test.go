package client

import (
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// makeTree makes dirs directories of files empty files each under
// root (as the benchmark's trees) and returns the paths of the files,
// relative to root, in the benchmark's order: one file of each
// directory in turn.
func makeTree(t testing.TB, root string, dirs, files int) []string {
	t.Helper()
	var paths []string
	for d := 0; d < dirs; d++ {
		if err := os.MkdirAll(filepath.Join(root, fmt.Sprintf("d%03d", d)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < dirs*files; i++ {
		p := filepath.Join(fmt.Sprintf("d%03d", i%dirs), fmt.Sprintf("f%05d", i))
		if err := os.WriteFile(filepath.Join(root, p), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

// findList is find's output under root (-printf type and path, and
// with stat size, links and mode), sorted.
func findList(t testing.TB, root string, stat bool) string {
	t.Helper()
	format := "%y %P\n"
	if stat {
		format = "%y %P %s %n %m\n"
	}
	out, err := exec.Command("find", root, "-printf", format).Output()
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		t.Fatalf("find %s: %v: %s", root, err, ee.Stderr)
	} else if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// settle waits until no subdirectory listing is being read ahead.
func (e *env) settle() {
	f := e.m.root.fsys
	for i := 0; i < 1000; i++ {
		f.pre.mu.Lock()
		n := len(f.pre.flights)
		f.pre.mu.Unlock()
		if n == 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
	e.t.Fatal("listings still read ahead after a second")
}

// TestFindTreeRequests: find over 100 directories of 100 files reads
// the subdirectories' listings ahead, several per request: a few dozen
// requests in all instead of three or more per directory, and the same
// output as find on the served directory. find with a stat of every
// entry (read ahead without attributes) costs no more than before the
// read-ahead (about four requests per directory) and gives the same
// sizes, links and modes.
func TestFindTreeRequests(t *testing.T) {
	data := t.TempDir()
	makeTree(t, filepath.Join(data, "tree"), 100, 100)
	for _, stat := range []bool{false, true} {
		e := mountEnv(t, data)
		dropCaches(t)
		before := e.m.Client().Stats()
		got := findList(t, e.path("tree"), stat)
		e.settle()
		after := e.m.Client().Stats()
		if want := findList(t, filepath.Join(data, "tree"), stat); got != want {
			t.Errorf("find (stat %v) through the mount differs from find on the directory (%d vs %d bytes)", stat, len(got), len(want))
		}
		used := after.Total - before.Total
		t.Logf("find (stat %v) over 100 x 100: %d requests %v", stat, used, after.ByType)
		if max := map[bool]uint64{false: 40, true: 420}[stat]; used > max {
			t.Errorf("find (stat %v) over 100 x 100 took %d requests, want at most %d", stat, used, max)
		}
		e.unmount()
	}
}

// TestStatTreeRequests: lstat of every file of 100 directories of 100
// files by path, one directory after the other in turn (as the
// benchmark), without listing any: the top directory's listing is read
// after a few lookups, and with it its subdirectories' listings.
func TestStatTreeRequests(t *testing.T) {
	data := t.TempDir()
	paths := makeTree(t, filepath.Join(data, "tree"), 100, 100)
	e := mountEnv(t, data)
	dropCaches(t)
	before := e.requests()
	for _, p := range paths {
		fi, err := os.Lstat(e.path("tree/" + p))
		if err != nil {
			t.Fatal(err)
		}
		if !fi.Mode().IsRegular() || fi.Size() != 0 {
			t.Fatalf("%s: %v", p, fi.Mode())
		}
	}
	for i := 0; i < 100; i++ {
		if _, err := os.Lstat(e.path(fmt.Sprintf("tree/d%03d/absent", i))); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("lstat of an absent name: %v", err)
		}
	}
	e.settle()
	used := e.requests() - before
	t.Logf("lstat of 10,000 files in 100 directories: %d requests %v", used, e.m.Client().Stats().ByType)
	if used > 60 {
		t.Errorf("lstat of 10,000 files in 100 directories took %d requests, want at most 60", used)
	}
}

// TestReaddirReadAhead: once a directory is listed, listing its
// subdirectories sends no request, and gives what a plain listing
// gives; changes made through the mount meanwhile (in a subdirectory
// read ahead, not yet listed) are seen.
func TestReaddirReadAhead(t *testing.T) {
	data := t.TempDir()
	makeTree(t, filepath.Join(data, "tree"), 20, 30)
	e := mountEnv(t, data)
	if _, err := os.ReadDir(e.path("tree")); err != nil {
		t.Fatal(err)
	}
	e.settle()
	list := func(dir string, stat bool) string {
		t.Helper()
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, de := range ents {
			s = append(s, fmt.Sprintf("%s %v", de.Name(), de.Type()))
			if !stat {
				continue
			}
			info, err := de.Info()
			if err != nil {
				t.Fatal(err)
			}
			s = append(s, fmt.Sprint(info.Size(), info.Mode()))
		}
		return strings.Join(s, ",")
	}
	names := func(dir string) string { return list(dir, true) }
	before := e.requests()
	got := list(e.path("tree/d003"), false)
	if used := e.requests() - before; used != 0 {
		t.Errorf("readdir of a directory read ahead sent %d requests %v", used, e.m.Client().Stats().ByType)
	}
	if want := list(filepath.Join(data, "tree/d003"), false); got != want {
		t.Errorf("d003 lists %s,\nwant %s", got, want)
	}
	// Its entries' attributes: the listing is read again with them, and
	// so are the other listings read ahead (two READDIRTREE).
	before = e.requests()
	if got, want := names(e.path("tree/d004")), names(filepath.Join(data, "tree/d004")); got != want {
		t.Errorf("d004 lists %s,\nwant %s", got, want)
	}
	e.settle()
	if used := e.requests() - before; used > 12 {
		t.Errorf("readdir and stat of 30 entries read ahead sent %d requests %v", used, e.m.Client().Stats().ByType)
	}
	// Changes in directories read ahead, not yet listed.
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(e.path("tree/d005/new"), []byte("new"), 0o644))
	must(os.Remove(e.path("tree/d006/f00006")))
	must(os.Rename(e.path("tree/d007/f00007"), e.path("tree/d008/moved")))
	must(os.WriteFile(e.path("tree/d009/f00009"), []byte("grown"), 0o644))
	must(os.Mkdir(e.path("tree/d010/sub"), 0o755))
	dropCaches(t)
	for _, d := range []string{"d005", "d006", "d007", "d008", "d009", "d010"} {
		if got, want := names(e.path("tree/"+d)), names(filepath.Join(data, "tree", d)); got != want {
			t.Errorf("%s lists %s,\nwant %s", d, got, want)
		}
	}
	for name, size := range map[string]int64{"d005/new": 3, "d008/moved": 0, "d009/f00009": 5} {
		if fi, err := os.Lstat(e.path("tree/" + name)); err != nil || fi.Size() != size {
			t.Errorf("%s: %v, %v; want %d bytes", name, fi, err, size)
		}
	}
	for _, name := range []string{"d006/f00006", "d007/f00007"} {
		if _, err := os.Lstat(e.path("tree/" + name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v, want it absent", name, err)
		}
	}
}

// TestDifferentialReadAhead: random changes across a few levels of
// directories, with the kernel's caches dropped often (so lookups and
// listings are answered by the client's listings, many read ahead),
// give the same results as on a plain directory.
func TestDifferentialReadAhead(t *testing.T) {
	e := mountEnv(t, "")
	fr, pr := diffRoots(t, e, "readahead")
	dirs := []string{".", "a", "b", "a/c", "a/c/d", "b/e"}
	var names []string
	for _, d := range dirs[1:] {
		names = append(names, d)
	}
	for _, d := range dirs {
		for _, f := range []string{"x", "y", "z"} {
			names = append(names, filepath.Join(d, f))
		}
	}
	run := func(r *runner) {
		for _, d := range dirs[1:] {
			r.mkdir(d, 0o755)
		}
		rng := rand.New(rand.NewSource(20261206))
		for i := 0; i < 500; i++ {
			if i%20 == 0 {
				dropCaches(t)
			}
			a := names[rng.Intn(len(names))]
			b := names[rng.Intn(len(names))]
			switch rng.Intn(10) {
			case 0, 1:
				r.write(a, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fmt.Sprint(i))
			case 2:
				r.unlink(a)
			case 3:
				r.mkdir(a, 0o755)
			case 4:
				r.rmdir(a)
			case 5:
				r.rename(a, b, 0)
			case 6, 7:
				r.stat(a, false)
			default:
				r.readdir(dirs[rng.Intn(len(dirs))])
			}
		}
	}
	compareRuns(t, fr, pr, run)
}

// TestFindAfterParentListed: find of a tree whose listing was read ahead
// when its parent was listed (ls, then the kernel's caches dropped): the
// subdirectories come with attributes in the names-only listing, so
// descending into each costs no lookup (54 requests before, about 30).
func TestFindAfterParentListed(t *testing.T) {
	data := t.TempDir()
	makeTree(t, filepath.Join(data, "tree"), 100, 100)
	e := mountEnv(t, data)
	if _, err := os.ReadDir(e.mnt); err != nil {
		t.Fatal(err)
	}
	e.settle()
	dropCaches(t)
	before := e.m.Client().Stats().Total
	got := findList(t, e.path("tree"), false)
	e.settle()
	used := e.m.Client().Stats().Total - before
	if want := findList(t, filepath.Join(data, "tree"), false); got != want {
		t.Errorf("find through the mount differs from find on the directory")
	}
	if used > 40 {
		t.Errorf("find after the parent was listed took %d requests, want at most 40", used)
	}
}
