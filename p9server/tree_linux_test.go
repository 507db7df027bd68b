//go:build linux

package p9server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hugelgupf/p9/p9"
	"github.com/qmount/qmount/internal/p9ext"
	"golang.org/x/sys/unix"
)

// TestNoEscape: nothing a client sends reaches outside the exported root.
func TestNoEscape(t *testing.T) {
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	root := filepath.Join(base, "root")
	must(t, os.Mkdir(outside, 0o755))
	must(t, os.Mkdir(root, 0o755))
	secret := filepath.Join(outside, "secret")
	must(t, os.WriteFile(secret, []byte("s3cret"), 0o600))
	must(t, os.Symlink(outside, filepath.Join(root, "abs")))
	must(t, os.Symlink("../outside", filepath.Join(root, "rel")))
	must(t, os.Symlink(secret, filepath.Join(root, "file")))
	must(t, os.WriteFile(filepath.Join(root, "a.txt"), []byte("a"), 0o644))
	before := snapshot(t, outside)

	// Through the wire.
	_, _, r := connect(t, root)
	for _, path := range []string{"abs/secret", "rel/secret", "abs/../root", "file/x"} {
		if f, err := tryWalk(r, path); err == nil {
			f.Close()
			t.Errorf("walk %q succeeded", path)
		}
	}
	for _, names := range [][]string{{".."}, {"."}, {"a/b"}, {"/"}, {"a\x00b"}, {""}} {
		if _, f, err := r.Walk(names); err == nil {
			f.Close()
			t.Errorf("walk %q succeeded", names)
		}
	}
	if err := p9Create(t, r, "file", p9.WriteOnly|p9.OpenFlags(dotlTrunc), 0o644, "pwned"); err == nil {
		t.Error("create over a symlink to outside succeeded")
	}
	if err := p9Open(t, r, "file", p9.WriteOnly, func(f p9.File) error { _, err := f.WriteAt([]byte("x"), 0); return err }); err == nil {
		t.Error("open of a symlink succeeded")
	}
	for _, sa := range []struct {
		valid p9.SetAttrMask
		attr  p9.SetAttr
	}{
		{p9.SetAttrMask{Size: true}, p9.SetAttr{Size: 0}},
		{p9.SetAttrMask{Permissions: true}, p9.SetAttr{Permissions: 0o777}},
		{p9.SetAttrMask{MTime: true, MTimeNotSystemTime: true}, p9.SetAttr{MTimeSeconds: 1}},
		{p9.SetAttrMask{UID: true, GID: true}, p9.SetAttr{UID: 99, GID: 99}},
	} {
		p9Setattr(r, "file", sa.valid, sa.attr) // may succeed on the link itself
	}
	for _, dir := range []string{"abs", "rel", "file"} {
		d := walk(t, r, dir)
		if _, err := d.Mkdir("x", 0o755, 0, 0); err == nil {
			t.Errorf("mkdir in symlink %s succeeded", dir)
		}
		if _, _, _, err := d.Create("x", p9.WriteOnly, 0o644, 0, 0); err == nil {
			t.Errorf("create in symlink %s succeeded", dir)
		}
		if err := d.UnlinkAt("secret", 0); err == nil {
			t.Errorf("unlink in symlink %s succeeded", dir)
		}
		d.Close()
	}

	// Directly on the File, past the library's own name checks.
	srv := newServer(t, root)
	pf, err := srv.fs.Attach()
	must(t, err)
	defer pf.Close()
	for _, name := range []string{"..", ".", "a/b", "/etc", "a\x00b", "../outside"} {
		if _, f, err := pf.Walk([]string{name}); err == nil {
			f.Close()
			t.Errorf("File.Walk(%q) succeeded", name)
		}
		if _, _, _, err := pf.Create(name, p9.WriteOnly, 0o644, 0, 0); err == nil {
			t.Errorf("File.Create(%q) succeeded", name)
		}
		if _, err := pf.Mkdir(name, 0o755, 0, 0); err == nil {
			t.Errorf("File.Mkdir(%q) succeeded", name)
		}
		if _, err := pf.Symlink("/", name, 0, 0); err == nil {
			t.Errorf("File.Symlink(%q) succeeded", name)
		}
		if _, err := pf.Mknod(name, p9.ModeNamedPipe|0o644, 0, 0, 0, 0); err == nil {
			t.Errorf("File.Mknod(%q) succeeded", name)
		}
		if err := pf.RenameAt("a.txt", pf, name); err == nil {
			t.Errorf("File.RenameAt(a.txt, %q) succeeded", name)
		}
		if err := pf.UnlinkAt(name, unix.AT_REMOVEDIR); err == nil {
			t.Errorf("File.UnlinkAt(%q) succeeded", name)
		}
	}
	for _, name := range []string{"abs", "file"} {
		_, sf, err := pf.Walk([]string{name})
		must(t, err)
		if _, _, err := sf.Open(p9.ReadOnly); errnoOf(err) != int(unix.ELOOP) {
			t.Errorf("File.Open(symlink %s) = %v, want ELOOP", name, err)
		}
		if _, sub, err := sf.Walk([]string{"secret"}); err == nil {
			sub.Close()
			t.Errorf("File.Walk through symlink %s succeeded", name)
		}
		if _, err := sf.Mkdir("x", 0o755, 0, 0); err == nil {
			t.Errorf("File.Mkdir in symlink %s succeeded", name)
		}
		sf.SetXattr("user.pwned", []byte("1"), 0)
		sf.Close()
	}
	if after := snapshot(t, outside); after != before {
		t.Errorf("outside changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	var st unix.Stat_t
	must(t, unix.Stat(secret, &st))
	if st.Mode&0o777 != 0o600 || st.Uid != 0 || st.Mtim.Sec < 1000 {
		t.Errorf("secret's attributes changed: %+v", st)
	}
}

// TestReaddirLarge lists a 100,000-entry directory in many calls,
// alternating between two open fids (so each call seeks to the cookie the
// other left), while another client adds files. Every original entry
// must be listed exactly once.
func TestReaddirLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("creates 100,000 files")
	}
	const n = 100000
	dir := t.TempDir()
	dfd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY, 0)
	must(t, err)
	for i := 0; i < n; i++ {
		fd, err := unix.Openat(dfd, fmt.Sprintf("f%06d", i), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		must(t, err)
		unix.Close(fd)
	}
	unix.Close(dfd)
	srv, _, root := connect(t, dir)
	var fids [2]p9.File
	for i := range fids {
		fids[i] = walk(t, root, "")
		_, _, err := fids[i].Open(p9.ReadOnly)
		must(t, err)
		defer fids[i].Close()
	}

	// A second connection adds files while we list.
	_, adder := attach(t, srv)
	stop := make(chan struct{})
	var added atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			d := walk(t, adder, "")
			_, _, _, err := d.Create(fmt.Sprintf("new%06d", i), p9.WriteOnly, 0o644, 0, 0)
			d.Close()
			if err != nil {
				t.Errorf("create during listing: %v", err)
				return
			}
			added.Add(1)
		}
	}()

	seen := make(map[string]int, n)
	var offset uint64
	calls := 0
	for {
		ents, err := fids[calls%2].Readdir(offset, 32<<10)
		calls++
		if err != nil {
			t.Fatalf("readdir at %d: %v", offset, err)
		}
		if len(ents) == 0 {
			break
		}
		for _, e := range ents {
			seen[e.Name]++
		}
		offset = ents[len(ents)-1].Offset
	}
	close(stop)
	wg.Wait()
	for name, c := range seen {
		if c != 1 {
			t.Errorf("%q listed %d times", name, c)
		}
		if name == "." || name == ".." {
			t.Errorf("listed %q", name)
		}
	}
	missing := 0
	for i := 0; i < n; i++ {
		if seen[fmt.Sprintf("f%06d", i)] != 1 {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d original entries not listed exactly once", missing, n)
	}
	t.Logf("%d calls, %d entries listed, %d files added concurrently", calls, len(seen), added.Load())
	if added.Load() == 0 {
		t.Error("no file was added while listing; the concurrency part tested nothing")
	}
}

// TestReaddirPlus lists a directory with READDIRPLUS over the wire and
// compares every entry with fstatat and llistxattr, and the cookies with
// Readdir's.
func TestReaddirPlus(t *testing.T) {
	dir := t.TempDir()
	want := map[string]bool{}
	for i := 0; i < 3000; i++ {
		name := fmt.Sprintf("file-%04d-%s", i, strings.Repeat("x", i%50))
		must(t, os.WriteFile(filepath.Join(dir, name), make([]byte, i), 0o640))
		if i%7 == 0 {
			must(t, unix.Lsetxattr(filepath.Join(dir, name), "user.i", []byte(fmt.Sprint(i)), 0))
			must(t, unix.Lsetxattr(filepath.Join(dir, name), "user.j", nil, 0))
		}
		want[name] = true
	}
	must(t, os.Mkdir(filepath.Join(dir, "sub"), 0o711))
	must(t, os.Symlink("file-0001-x", filepath.Join(dir, "link")))
	must(t, unix.Mkfifo(filepath.Join(dir, "fifo"), 0o600))
	for _, n := range []string{"sub", "link", "fifo"} {
		want[n] = true
	}

	srv := newServer(t, dir)
	rc := newRawClient(t, srv, DefaultMessageSize)
	rc.attach(1)
	must(t, rc.walk(1, 2)) // a long-lived directory fid, never opened
	base := srv.OpenFiles()

	readAllAs := func(start uint64, max uint32, names bool) ([]p9ext.Entry, int) {
		var all []p9ext.Entry
		cookie, batches := start, 0
		for {
			req := p9ext.ReaddirPlusName(cookie, max)
			if names {
				req = p9ext.ReaddirNamesName(cookie, max)
			}
			b, err := rc.getXattr(2, req)
			if err != nil {
				t.Fatalf("readdirplus at %d: %v", cookie, err)
			}
			batch, err := p9ext.Decode(b)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			batches++
			all = append(all, batch.Entries...)
			if batch.EOF {
				return all, batches
			}
			if len(batch.Entries) == 0 {
				t.Fatal("empty batch without EOF")
			}
			cookie = batch.Entries[len(batch.Entries)-1].Offset
		}
	}
	readAll := func(start uint64, max uint32) ([]p9ext.Entry, int) { return readAllAs(start, max, false) }
	entries, batches := readAll(0, 64<<10)
	if batches < 3 {
		t.Errorf("only %d batches of 64 KiB for %d entries", batches, len(entries))
	}
	got := map[string]bool{}
	for _, e := range entries {
		if got[e.Name] {
			t.Errorf("%q listed twice", e.Name)
		}
		got[e.Name] = true
		var st unix.Statx_t
		must(t, unix.Statx(unix.AT_FDCWD, filepath.Join(dir, e.Name), unix.AT_SYMLINK_NOFOLLOW, unix.STATX_ALL, &st))
		wv, wa := attrFromStatx(&st)
		if e.Valid != wv || e.Attr != wa {
			t.Errorf("%s: attr %v %v, want %v %v", e.Name, e.Valid, e.Attr, wv, wa)
		}
		if e.QID.Path != st.Ino || e.QID.Type != p9.FileMode(st.Mode).QIDType() || e.Type != e.QID.Type {
			t.Errorf("%s: qid %v type %v", e.Name, e.QID, e.Type)
		}
		buf := make([]byte, 4096)
		n, err := unix.Llistxattr(filepath.Join(dir, e.Name), buf)
		must(t, err)
		wantX := splitNames(buf[:n])
		sort.Strings(wantX)
		gotX := append([]string(nil), e.Xattrs...)
		sort.Strings(gotX)
		if !e.XattrsKnown || !reflect.DeepEqual(gotX, wantX) {
			t.Errorf("%s: xattrs %v (known %v), want %v", e.Name, gotX, e.XattrsKnown, wantX)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("listed %d names, want %d", len(got), len(want))
	}

	// Same cookies as Readdir, and resuming from the middle works.
	_, _, root := connect(t, dir)
	d := walk(t, root, "")
	defer d.Close()
	_, _, err := d.Open(p9.ReadOnly)
	must(t, err)
	cookies := map[string]uint64{}
	var off uint64
	for {
		ents, err := d.Readdir(off, 64<<10)
		must(t, err)
		if len(ents) == 0 {
			break
		}
		for _, e := range ents {
			cookies[e.Name] = e.Offset
		}
		off = ents[len(ents)-1].Offset
	}
	for _, e := range entries {
		if cookies[e.Name] != e.Offset {
			t.Errorf("%s: readdirplus cookie %d, readdir cookie %d", e.Name, e.Offset, cookies[e.Name])
		}
	}
	// Names only: the same entries and cookies, each with its QID and
	// file type and no other attribute, except subdirectories (all).
	named, _ := readAllAs(0, 64<<10, true)
	if len(named) != len(entries) {
		t.Errorf("names-only listing has %d entries, want %d", len(named), len(entries))
	}
	for i, e := range named {
		if i >= len(entries) {
			break
		}
		full := entries[i]
		if e.Name != full.Name || e.Offset != full.Offset || e.QID != full.QID || e.Type != full.Type {
			t.Errorf("names-only %q (off %d qid %v type %v), full %q (off %d qid %v type %v)",
				e.Name, e.Offset, e.QID, e.Type, full.Name, full.Offset, full.QID, full.Type)
		}
		if full.Attr.Mode.IsDir() {
			// Subdirectories carry all their attributes.
			if e.Valid != full.Valid || e.Attr != full.Attr {
				t.Errorf("names-only directory %q: valid %v attr %+v; want all, as %+v", e.Name, e.Valid, e.Attr, full.Attr)
			}
			continue
		}
		if e.Valid != (p9.AttrMask{Mode: true}) || e.Attr.Mode != full.Attr.Mode&p9.FileModeMask || e.XattrsKnown {
			t.Errorf("names-only %q: valid %v mode %o xattrs known %v; want the type %o alone",
				e.Name, e.Valid, e.Attr.Mode, e.XattrsKnown, full.Attr.Mode&p9.FileModeMask)
		}
	}

	mid := len(entries) / 2
	rest, _ := readAll(entries[mid].Offset, 1<<20)
	if len(rest) != len(entries)-mid-1 || rest[0].Name != entries[mid+1].Name {
		t.Errorf("resuming after entry %d gave %d entries starting %q", mid, len(rest), rest[0].Name)
	}

	// A batch too small for one entry is refused; the fid stays usable.
	if _, err := rc.getXattr(2, p9ext.ReaddirPlusName(0, 16)); err == nil {
		t.Error("readdirplus with a 16-byte batch succeeded")
	}
	// Every xattr fid shared the directory's File and was clunked: the
	// directory fid still works and nothing leaked.
	must(t, rc.walk(2, 3, "sub"))
	must(t, rc.clunk(3))
	if got := srv.OpenFiles(); got != base {
		t.Errorf("OpenFiles %d after readdirplus, want %d", got, base)
	}
	must(t, rc.clunk(2))
	if got := srv.OpenFiles(); got != base-1 {
		t.Errorf("OpenFiles %d after clunking the directory, want %d", got, base-1)
	}
}

// TestXattrs sets, gets, lists and removes xattrs over the wire and
// compares errnos with the system calls.
func TestXattrs(t *testing.T) {
	dir := t.TempDir()
	baseTree(t, dir)
	plain := filepath.Join(t.TempDir(), "plain")
	must(t, os.WriteFile(plain, nil, 0o644))
	srv := newServer(t, dir)
	rc := newRawClient(t, srv, 65536)
	rc.attach(1)
	must(t, rc.walk(1, 2, "a.txt"))

	steps := []struct {
		name  string
		value string
		flags uint32
	}{
		{"user.a", "1", 0},
		{"user.a", "2", 1}, // XATTR_CREATE, exists: EEXIST
		{"user.b", "3", 2}, // XATTR_REPLACE, missing: ENODATA
		{"user.a", "22", 2},
		{"user.big", strings.Repeat("v", 3000), 0},
		{"user.empty", "", 0},
		{"bogus.ns", "x", 0}, // EOPNOTSUPP
	}
	for _, s := range steps {
		got := errnoOf(rc.setXattr(2, s.name, []byte(s.value), s.flags))
		want := errnoOf(unix.Setxattr(plain, s.name, []byte(s.value), int(s.flags)))
		if got != want {
			t.Errorf("set %s flags %d: 9p %s, syscall %s", s.name, s.flags, errName(got), errName(want))
		}
	}
	for name, want := range map[string]string{"user.a": "22", "user.big": strings.Repeat("v", 3000), "user.empty": ""} {
		b, err := rc.getXattr(2, name)
		if err != nil || string(b) != want {
			t.Errorf("get %s = %q, %v; want %q", name, b, err, want)
		}
	}
	if _, err := rc.getXattr(2, "user.missing"); err == nil {
		t.Error("get of a missing xattr succeeded")
	}
	list, err := rc.getXattr(2, "")
	must(t, err)
	names := splitNames(list)
	sort.Strings(names)
	if !reflect.DeepEqual(names, []string{"user.a", "user.big", "user.empty"}) {
		t.Errorf("list = %q", names)
	}
	// Removal: Txattrcreate with size 0 and XATTR_REPLACE.
	must(t, rc.setXattr(2, "user.a", nil, 2))
	if got := errnoOf(rc.setXattr(2, "user.a", nil, 2)); got != int(unix.ENODATA) {
		t.Errorf("removing a missing xattr: %s, want ENODATA", errName(got))
	}
	// On an open fid (fgetxattr), which keeps working after the xattr fid
	// sharing its File is clunked.
	must(t, rc.walk(1, 3, "a.txt"))
	must(t, rc.lopen(3, uint32(p9.ReadOnly)))
	b, err := rc.getXattr(3, "user.big")
	if err != nil || len(b) != 3000 {
		t.Errorf("get on open fid = %d bytes, %v", len(b), err)
	}
	data, err := rc.readAll(3, 5, 100)
	if err != nil || string(data) != "hello" {
		t.Errorf("read after xattr clunk = %q, %v", data, err)
	}
	// Set-ID bits through ChmodXattr.
	must(t, rc.setXattr(2, ChmodXattr, []byte{0xed, 0x0d, 0, 0}, 0)) // 06755
	var st unix.Stat_t
	must(t, unix.Stat(filepath.Join(dir, "a.txt"), &st))
	if st.Mode != unix.S_IFREG|0o6755 {
		t.Errorf("mode after ChmodXattr %o, want %o", st.Mode, unix.S_IFREG|0o6755)
	}
	if err := rc.setXattr(2, ChmodXattr, []byte{1}, 0); err == nil {
		t.Error("ChmodXattr with a 1-byte value succeeded")
	}
	// On a symlink: user xattrs are refused by Linux, as on the plain file system.
	must(t, rc.walk(1, 4, "s"))
	got := errnoOf(rc.setXattr(4, "user.x", []byte("1"), 0))
	want := errnoOf(unix.Lsetxattr(filepath.Join(dir, "s"), "user.x", []byte("1"), 0))
	if got != want {
		t.Errorf("set on symlink: 9p %s, syscall %s", errName(got), errName(want))
	}
	for _, fid := range []uint32{2, 3, 4} {
		must(t, rc.clunk(fid))
	}

	// Directly on the File: every call with a reference balanced by Close.
	pf, err := srv.fs.Attach()
	must(t, err)
	_, f, err := pf.Walk([]string{"d"})
	must(t, err)
	must(t, f.SetXattr("user.dir", []byte("v"), p9.XattrCreate))
	v, err := f.GetXattr("user.dir")
	if err != nil || string(v) != "v" {
		t.Errorf("GetXattr = %q, %v", v, err)
	}
	f.Close() // the reference GetXattr took
	l, err := f.ListXattrs()
	if err != nil || !reflect.DeepEqual(l, []string{"user.dir"}) {
		t.Errorf("ListXattrs = %q, %v", l, err)
	}
	f.Close()
	must(t, f.RemoveXattr("user.dir"))
	if err := f.RemoveXattr("user.dir"); errnoOf(err) != int(unix.ENODATA) {
		t.Errorf("RemoveXattr missing: %v", err)
	}
	before := srv.OpenFiles()
	f.Close()
	pf.Close()
	if srv.OpenFiles() != before-2 {
		t.Errorf("OpenFiles %d, want %d", srv.OpenFiles(), before-2)
	}
}

// TestLeaks: 10,000 walk/open/read/clunk cycles (and xattr walks,
// creates, readdirs) leave no server file and no descriptor behind.
func TestLeaks(t *testing.T) {
	dir := t.TempDir()
	baseTree(t, dir)
	srv, _, root := connect(t, dir)
	rc := newRawClient(t, srv, 65536)
	rc.attach(1)
	// The root fid keeps one READDIRPLUS descriptor once used: open it
	// before taking the baseline.
	if _, err := rc.getXattr(1, p9ext.ReaddirPlusName(0, 4096)); err != nil {
		t.Fatal(err)
	}
	baseFiles := srv.OpenFiles()
	baseFds := countFds(t)
	buf := make([]byte, 16)
	for i := 0; i < 10000; i++ {
		_, f, _, _, err := root.WalkGetAttr([]string{"a.txt"})
		must(t, err)
		_, _, err = f.Open(p9.ReadOnly)
		must(t, err)
		if _, err := f.ReadAt(buf, 0); err != nil {
			t.Fatal(err)
		}
		must(t, f.Close())
		if i%10 == 0 {
			must(t, p9Create(t, root, "tmp", p9.WriteOnly, 0o644, ""))
			must(t, p9Unlink(t, root, "tmp", 0))
			d := walk(t, root, "d")
			_, _, err := d.Open(p9.ReadOnly)
			must(t, err)
			_, err = d.Readdir(0, 4096)
			must(t, err)
			d.Close()
			if _, err := rc.getXattr(1, p9ext.ReaddirPlusName(0, 4096)); err != nil {
				t.Fatal(err)
			}
			if _, err := rc.getXattr(1, "user.none"); err == nil {
				t.Fatal("missing xattr found")
			}
		}
		if _, f, err := root.Walk([]string{"missing"}); err == nil {
			f.Close()
		}
	}
	if got := srv.OpenFiles(); got != baseFiles {
		t.Errorf("OpenFiles %d, want %d", got, baseFiles)
	}
	// The library's client clunks unreachable files from a finalizer.
	runtime.KeepAlive(root)
	if got := countFds(t); got != baseFds {
		t.Errorf("open descriptors %d, want %d", got, baseFds)
		ents, _ := os.ReadDir("/proc/self/fd")
		for _, e := range ents {
			l, _ := os.Readlink("/proc/self/fd/" + e.Name())
			t.Logf("fd %s -> %s", e.Name(), l)
		}
	}
}

func countFds(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	must(t, err)
	return len(ents)
}

// TestStats: the counters count exactly the messages sent.
func TestStats(t *testing.T) {
	dir := t.TempDir()
	baseTree(t, dir)
	srv := newServer(t, dir)
	cl, root := attach(t, srv)
	for _, name := range []string{"a.txt", "d", "s"} {
		_, f, _, _, err := root.WalkGetAttr([]string{name})
		must(t, err)
		f.Close()
	}
	f := walk(t, root, "a.txt")
	_, _, err := f.Open(p9.ReadOnly)
	must(t, err)
	_, err = f.ReadAt(make([]byte, 5), 0)
	must(t, err)
	f.Close()
	st := srv.Stats()
	want := map[string]uint64{"Tversion": 1, "Tattach": 1, "Twalkgetattr": 3, "Twalk": 1, "Tlopen": 1, "Tread": 1, "Tclunk": 4}
	var total uint64
	for _, n := range want {
		total += n
	}
	if !reflect.DeepEqual(st.ByType, want) || st.Requests != total {
		t.Errorf("stats %v (total %d), want %v (%d)", st.ByType, st.Requests, want, total)
	}
	if st.BytesIn == 0 || st.BytesOut == 0 {
		t.Errorf("bytes in %d out %d", st.BytesIn, st.BytesOut)
	}
	runtime.KeepAlive(cl)
	runtime.KeepAlive(root) // no finalizer clunk before the count
}

// TestReadOnly: every mutation fails with EROFS and changes nothing;
// reads work.
func TestReadOnly(t *testing.T) {
	dir := t.TempDir()
	baseTree(t, dir)
	before := snapshot(t, dir)
	srv, _, r := connect(t, dir, WithReadOnly())
	target := walk(t, r, "a.txt")
	defer target.Close()
	d := walk(t, r, "d")
	defer d.Close()
	muts := map[string]func() error{
		"mkdir":   func() error { _, err := r.Mkdir("n", 0o755, 0, 0); return err },
		"create":  func() error { return p9Create(t, r, "n", p9.WriteOnly, 0o644, "") },
		"symlink": func() error { _, err := r.Symlink("a", "n", 0, 0); return err },
		"link":    func() error { return r.Link(target, "n") },
		"mknod":   func() error { _, err := r.Mknod("n", p9.ModeNamedPipe|0o644, 0, 0, 0, 0); return err },
		"rename":  func() error { return r.RenameAt("a.txt", d, "n") },
		"unlink":  func() error { return r.UnlinkAt("a.txt", 0) },
		"rmdir":   func() error { return r.UnlinkAt("e", unix.AT_REMOVEDIR) },
		"chmod": func() error {
			return p9Setattr(r, "a.txt", p9.SetAttrMask{Permissions: true}, p9.SetAttr{Permissions: 0o777})
		},
		"chown": func() error { return p9Setattr(r, "a.txt", p9.SetAttrMask{UID: true}, p9.SetAttr{UID: 1}) },
		"truncate": func() error {
			return p9Setattr(r, "a.txt", p9.SetAttrMask{Size: true}, p9.SetAttr{Size: 0})
		},
		"utimes": func() error {
			return p9Setattr(r, "a.txt", p9.SetAttrMask{ATime: true, MTime: true}, p9.SetAttr{})
		},
		"open write": func() error { return p9Open(t, r, "a.txt", p9.WriteOnly, func(p9.File) error { return nil }) },
		"open rdwr":  func() error { return p9Open(t, r, "a.txt", p9.ReadWrite, func(p9.File) error { return nil }) },
		"open trunc": func() error {
			return p9Open(t, r, "a.txt", p9.ReadOnly|p9.OpenFlags(dotlTrunc), func(p9.File) error { return nil })
		},
	}
	rc := newRawClient(t, srv, 65536)
	rc.attach(1)
	must(t, rc.walk(1, 2, "a.txt"))
	muts["setxattr"] = func() error { return rc.setXattr(2, "user.x", []byte("1"), 0) }
	muts["removexattr"] = func() error { return rc.setXattr(2, "user.x", nil, 2) }
	muts["chmod xattr"] = func() error { return rc.setXattr(2, ChmodXattr, []byte{0xff, 1, 0, 0}, 0) }
	for name, fn := range muts {
		if err := fn(); errnoOf(err) != int(unix.EROFS) {
			t.Errorf("%s: %v, want EROFS", name, err)
		}
	}
	if err := p9Open(t, r, "a.txt", p9.ReadOnly, func(f p9.File) error {
		b := make([]byte, 5)
		_, err := f.ReadAt(b, 0)
		if string(b) != "hello" {
			return fmt.Errorf("read %q", b)
		}
		return err
	}); err != nil {
		t.Errorf("read: %v", err)
	}
	if _, err := rc.getXattr(1, p9ext.ReaddirPlusName(0, 65536)); err != nil {
		t.Errorf("readdirplus: %v", err)
	}
	if after := snapshot(t, dir); after != before {
		t.Errorf("tree changed:\n%s\n%s", before, after)
	}
}

// TestMessageSize: the server caps a client's msize at its own and
// grants a smaller one as asked; a 1 MiB read is one request.
func TestMessageSize(t *testing.T) {
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "f"), make([]byte, 1<<20), 0o644))
	for _, c := range []struct {
		opts      []Option
		ask, want uint32
	}{
		{nil, 8 << 20, DefaultMessageSize},
		{nil, 65536, 65536},
		{[]Option{WithMessageSize(100000)}, 1 << 20, 100000},
	} {
		rc := newRawClient(t, newServer(t, dir, c.opts...), c.ask)
		if rc.msize != c.want {
			t.Errorf("asked %d with %v: got msize %d, want %d", c.ask, c.opts, rc.msize, c.want)
		}
	}
	srv := newServer(t, dir)
	rc := newRawClient(t, srv, 8<<20)
	rc.attach(1)
	must(t, rc.walk(1, 2, "f"))
	must(t, rc.lopen(2, uint32(p9.ReadOnly)))
	reads := srv.Stats().ByType["Tread"]
	data, err := rc.readAll(2, 1<<20, 1<<20)
	if err != nil || len(data) != 1<<20 {
		t.Fatalf("read %d bytes, %v", len(data), err)
	}
	if n := srv.Stats().ByType["Tread"] - reads; n != 1 {
		t.Errorf("1 MiB took %d reads", n)
	}
	for _, n := range []uint32{0, 100, 5 << 20} {
		if _, err := New(dir, WithMessageSize(n)); err == nil {
			t.Errorf("WithMessageSize(%d) accepted", n)
		}
	}
}

// TestReplyWrites: on a real connection, a 1 MiB Rread leaves the server
// in two writes (a full 32 KiB chunk, then the rest), small replies in one.
func TestReplyWrites(t *testing.T) {
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "f"), make([]byte, 1<<20), 0o644))
	srv := newServer(t, dir)
	cc, sc := socketPair(t)
	rec := &countingConn{Conn: sc}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background(), rec) }()
	defer func() { cc.Close(); <-done }()
	cl, err := p9.NewClient(cc, p9.WithMessageSize(DefaultMessageSize))
	must(t, err)
	root, err := cl.Attach("/")
	must(t, err)
	f := walk(t, root, "f")
	_, _, err = f.Open(p9.ReadOnly)
	must(t, err)
	rec.reset()
	n, err := f.ReadAt(make([]byte, 1<<20), 0)
	if err != nil || n != 1<<20 {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	if sizes := rec.sizes(); len(sizes) != 2 || sizes[0] != writeChunk {
		t.Errorf("1 MiB reply written as %v", sizes)
	}
	rec.reset()
	_, _, _, err = f.GetAttr(p9.AttrMaskAll)
	must(t, err)
	if sizes := rec.sizes(); len(sizes) != 1 {
		t.Errorf("getattr reply written as %v", sizes)
	}
	runtime.KeepAlive(root) // no finalizer clunk in between
}

type countingConn struct {
	net.Conn
	mu sync.Mutex
	ws []int
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.ws = append(c.ws, len(p))
	c.mu.Unlock()
	return c.Conn.Write(p)
}
func (c *countingConn) reset() { c.mu.Lock(); c.ws = nil; c.mu.Unlock() }
func (c *countingConn) sizes() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.ws...)
}

// TestServeStops: Serve and ServeListener end with their context and
// release every file.
func TestServeStops(t *testing.T) {
	dir := t.TempDir()
	baseTree(t, dir)
	srv := newServer(t, dir)

	ctx, cancel := context.WithCancel(context.Background())
	cc, sc := socketPair(t)
	defer cc.Close()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, sc) }()
	cl, err := p9.NewClient(cc)
	must(t, err)
	root, err := cl.Attach("/")
	must(t, err)
	walk(t, root, "a.txt")
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Serve after cancel: %v", err)
	}
	if _, err := tryWalk(root, "d"); err == nil {
		t.Error("request after Serve ended succeeded")
	}

	sock := filepath.Join(t.TempDir(), "9p.sock")
	l, err := net.Listen("unix", sock)
	must(t, err)
	ctx, cancel = context.WithCancel(context.Background())
	go func() { done <- srv.ServeListener(ctx, l) }()
	for i := 0; i < 3; i++ {
		c, err := net.Dial("unix", sock)
		must(t, err)
		defer c.Close()
		cl, err := p9.NewClient(c)
		must(t, err)
		root, err := cl.Attach("/")
		must(t, err)
		walk(t, root, "d")
	}
	if srv.OpenFiles() == 0 {
		t.Error("no open files while clients are attached")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("ServeListener: %v", err)
	}
	if n := srv.OpenFiles(); n != 0 {
		t.Errorf("OpenFiles %d after every connection ended", n)
	}
}

// TestWithoutProc exercises the fallbacks used where /proc is not
// mounted: reopening through the parent (kept right by Renamed),
// truncating and chmod through *at calls.
func TestWithoutProc(t *testing.T) {
	dir := t.TempDir()
	baseTree(t, dir)
	srv := newServer(t, dir)
	srv.fs.(*fsys).procOK = false
	_, r := attach(t, srv)
	f := walk(t, r, "d/x")
	defer f.Close()
	must(t, p9Rename(t, r, "d/x", "e/y"))
	_, _, err := f.Open(p9.ReadWrite)
	must(t, err)
	if _, err := f.WriteAt([]byte("moved"), 0); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "e", "y")); string(b) != "moved" {
		t.Errorf("e/y = %q", b)
	}
	must(t, p9Setattr(r, "a.txt", p9.SetAttrMask{Size: true, Permissions: true}, p9.SetAttr{Size: 1, Permissions: 0o600}))
	var st unix.Stat_t
	must(t, unix.Stat(filepath.Join(dir, "a.txt"), &st))
	if st.Size != 1 || st.Mode&0o7777 != 0o600 {
		t.Errorf("a.txt size %d mode %o", st.Size, st.Mode)
	}
	// A file replaced under its name is not reopened.
	g := walk(t, r, "a.txt")
	defer g.Close()
	must(t, os.Rename(filepath.Join(dir, "e", "y"), filepath.Join(dir, "a.txt")))
	if _, _, err := g.Open(p9.ReadOnly); errnoOf(err) != int(unix.ESTALE) {
		t.Errorf("open of a replaced file: %v, want ESTALE", err)
	}
	// READDIRPLUS still works, without xattr names.
	rc := newRawClient(t, srv, 65536)
	rc.attach(1)
	b, err := rc.getXattr(1, p9ext.ReaddirPlusName(0, 65536))
	must(t, err)
	batch, err := p9ext.Decode(b)
	must(t, err)
	if !batch.EOF || len(batch.Entries) != 4 {
		t.Errorf("batch: eof %v, %d entries", batch.EOF, len(batch.Entries))
	}
	for _, e := range batch.Entries {
		if e.XattrsKnown || !e.Valid.Mode {
			t.Errorf("%s: xattrs known %v, valid %v", e.Name, e.XattrsKnown, e.Valid)
		}
	}
}
