package client

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hugelgupf/p9/fsimpl/localfs"
	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"

	"github.com/qmount/qmount/internal/p9ext"
)

// hookFile is a localfs file of the p9 library's server with READDIRPLUS
// (plusBatch) and a READDIRTREE of its own (treeAnswer), and hooks
// called before READDIRTREE answers and writes, so a test can order
// them against the client's operations.
type hookFile struct {
	p9.File
	path string
	h    *hooks
}

type hooks struct {
	tree  func(dir string, after uint64, names bool) // after the answer is made, before it is sent
	write func(path string)                          // before the write reaches the file
}

func (f *hookFile) Walk(names []string) ([]p9.QID, p9.File, error) {
	q, nf, err := f.File.Walk(names)
	if err != nil {
		return q, nf, err
	}
	return q, &hookFile{File: nf, path: filepath.Join(append([]string{f.path}, names...)...), h: f.h}, nil
}

func (f *hookFile) WalkGetAttr(names []string) ([]p9.QID, p9.File, p9.AttrMask, p9.Attr, error) {
	return nil, nil, p9.AttrMask{}, p9.Attr{}, linux.ENOSYS
}

func (f *hookFile) WriteAt(p []byte, off int64) (int, error) {
	if f.h.write != nil {
		f.h.write(f.path)
	}
	return f.File.WriteAt(p, off)
}

func (f *hookFile) GetXattr(name string) ([]byte, error) {
	if off, max, _, ok := p9ext.ParseReaddirPlusName(name); ok {
		return plusBatch(f.path, off, max)
	}
	if after, max, dirs, names, ok := p9ext.ParseReaddirTreeName(name); ok {
		b, err := treeAnswer(f.path, after, max, dirs, names)
		if err == nil && f.h.tree != nil {
			f.h.tree(f.path, after, names)
		}
		return b, err
	}
	return nil, linux.ENODATA
}

// treeAnswer lists the next dirs subdirectories of dir after cookie
// after (cookies: index + 1, as plusBatch), names: without attributes.
func treeAnswer(dir string, after uint64, max uint32, dirs int, names bool) ([]byte, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, linux.EIO
	}
	te := p9ext.NewTreeEncoder(max)
	for i := int(after); i < len(ents); i++ {
		if !ents[i].IsDir() {
			continue
		}
		if te.Len() >= dirs {
			return te.Bytes(false), nil
		}
		e, err := plusEntry(dir, ents[i].Name(), uint64(i+1))
		if err != nil {
			return nil, linux.EIO
		}
		b, err := plusBatch(filepath.Join(dir, ents[i].Name()), 0, 1<<20)
		if err != nil {
			return nil, err
		}
		if names {
			batch, err := p9ext.Decode(b)
			if err != nil {
				return nil, linux.EIO
			}
			enc := p9ext.NewEncoder(1 << 20)
			for _, se := range batch.Entries {
				se.Valid = p9.AttrMask{Mode: true}
				se.Attr = p9.Attr{Mode: se.Attr.Mode & p9.FileModeMask}
				se.Xattrs, se.XattrsKnown = nil, false
				enc.Add(se)
			}
			b = enc.Bytes(batch.EOF)
		}
		if ok, _ := te.Add(ents[i].Name(), uint64(i+1), e.QID, b); !ok {
			return te.Bytes(false), nil
		}
	}
	return te.Bytes(true), nil
}

// mountHook is mountAttacher with the client's log on stderr.
func mountHook(t *testing.T, a p9.Attacher) (*Mounted, string) {
	t.Helper()
	return mountAttacher(t, a, WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))))
}

type hookAttacher struct {
	p9.Attacher
	dir string
	h   *hooks
}

func (a hookAttacher) Attach() (p9.File, error) {
	f, err := a.Attacher.Attach()
	if err != nil {
		return nil, err
	}
	return &hookFile{File: f, path: a.dir, h: a.h}, nil
}

// TestReadAheadDuringWrite: a subdirectory's listing read ahead (with
// attributes) while a write to one of its files is in flight on the
// server must not later give the file's size from before the write.
// The write invalidates the parent's listings before it is sent only,
// so the read-ahead made after that and before the write lands is kept
// and later answers readdir (READDIRPLUS), whose attributes the kernel
// and the client's node take: stat says 0 bytes, and reads end there.
func TestReadAheadDuringWrite(t *testing.T) {
	data := t.TempDir()
	if err := os.MkdirAll(filepath.Join(data, "p/d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "p/d/f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	started, gate := make(chan struct{}), make(chan struct{})
	var once sync.Once
	h := &hooks{write: func(path string) {
		if strings.HasSuffix(path, "/p/d/f") {
			once.Do(func() { close(started) })
			<-gate
		}
	}}
	m, mnt := mountHook(t, hookAttacher{localfs.Attacher(data), data, h})
	fh, err := os.OpenFile(filepath.Join(mnt, "p/d/f"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	wrote := make(chan error, 1)
	go func() {
		_, err := fh.Write([]byte("hello"))
		wrote <- err
	}()
	<-started
	// the client has invalidated what it caches; the write is on the server
	// Lookups in p that its listing cannot answer: after a few, p's
	// listing is prefetched, and its subdirectories read ahead with
	// attributes (d, whose f is still empty on the server).
	for _, name := range []string{"x1", "x2", "x3", "x4", "x5"} {
		os.Lstat(filepath.Join(mnt, "p", name))
	}
	f := m.root.fsys
	for i := 0; i < 1000; i++ {
		f.pre.mu.Lock()
		n, l := len(f.pre.flights), len(f.pre.lists)
		f.pre.mu.Unlock()
		if n == 0 && l > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	close(gate)
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	fh.Close()
	time.Sleep(200 * time.Millisecond) // the release's refresh
	ents, err := os.ReadDir(filepath.Join(mnt, "p/d"))
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range ents {
		if info, err := de.Info(); err != nil || info.Size() != 5 {
			t.Errorf("readdir+stat of %s after the write: %v, %v; want 5 bytes", de.Name(), info.Size(), err)
		}
	}
	if fi, err := os.Stat(filepath.Join(mnt, "p/d/f")); err != nil || fi.Size() != 5 {
		t.Errorf("stat after the write: %d bytes, %v; want 5", fi.Size(), err)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "p/d/f")); err != nil || string(b) != "hello" {
		t.Errorf("read after the write: %q, %v; want hello", b, err)
	}
}

// TestPreStoreOverlappingFlights: two read-aheads of one directory in
// flight at once (sawStats re-reads with attributes a chunk still being
// read without them; or two readdirs of the parent pass known() before
// either begins), a change of the directory through the mount, and the
// later-begun flight ending first: its end clears the change's mark, so
// the earlier flight's listing, read before the change, is kept and
// answers lookups (ENOENT for a file just created) and readdir.
func TestPreStoreOverlappingFlights(t *testing.T) {
	var s preStore
	s.init()
	const ino = 42
	a := s.begin([]uint64{ino}) // read ahead without attributes (find)
	stale := &preListing{entries: []p9ext.Entry{{Name: "old", Offset: 1}}, complete: true, names: true, at: time.Now()}
	b := s.begin([]uint64{ino}) // sawStats: the same chunk with attributes
	s.drop(ino)                 // "new" created in the directory through the mount
	fresh := &preListing{entries: []p9ext.Entry{{Name: "new", Offset: 1}, {Name: "old", Offset: 2}}, complete: true, at: time.Now()}
	s.end([]uint64{ino}, map[uint64]*preListing{ino: fresh}, b) // dropped: right
	s.end([]uint64{ino}, map[uint64]*preListing{ino: stale}, a) // read before the change
	if l := s.take(context.Background(), ino); l != nil {
		t.Errorf("a listing read before a change of its directory is kept: %v", l.entries)
	}
}

// TestReadAheadOverlapStale: the same as TestPreStoreOverlappingFlights
// through the mount. find lists p (17 subdirectories: two read-ahead
// requests without attributes, A0 and A1; A1's answer, read on the
// server, is held back). A stat in d00 needs attributes: sawStats
// re-reads both chunks with them (B1 for d16, taking over A1's flight
// mark), and B1 ends. A file is created in d16 through the mount. Then
// A1's answer arrives: its listing of d16, read before the create, is
// kept, and once the kernel forgets d16 it answers readdir (the new
// file missing) and lookups (ENOENT for it).
func TestReadAheadOverlapStale(t *testing.T) {
	data := t.TempDir()
	for i := 0; i < 17; i++ {
		if err := os.MkdirAll(filepath.Join(data, "p", "d"+string(rune('a'+i))), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(data, "p/da/f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	last := "d" + string(rune('a'+16))
	held, gate := make(chan struct{}), make(chan struct{})
	var gateOnce sync.Once
	openGate := func() { gateOnce.Do(func() { close(gate) }) }
	defer openGate() // never leave the held request blocked
	var once sync.Once
	h := &hooks{tree: func(dir string, after uint64, names bool) {
		if names && after == 16 {
			once.Do(func() { close(held) })
			<-gate
		}
	}}
	m, mnt := mountHook(t, hookAttacher{localfs.Attacher(data), data, h})
	f := m.root.fsys
	flights := func() int {
		f.pre.mu.Lock()
		defer f.pre.mu.Unlock()
		return len(f.pre.flights)
	}
	if _, err := os.ReadDir(filepath.Join(mnt, "p")); err != nil {
		t.Fatal(err)
	}
	<-held
	for i := 0; i < 1000 && flights() > 1; i++ {
		time.Sleep(time.Millisecond)
	}
	if flights() != 1 {
		t.Fatalf("%d flights, want A1's only", flights())
	}
	os.Lstat(filepath.Join(mnt, "p/da/f")) // needs attributes: sawStats
	// The re-read (B1) ends; A1, held, is the only flight left.
	reread := func() bool {
		f.pre.mu.Lock()
		defer f.pre.mu.Unlock()
		return f.pre.inFlight[uint64(0)] == 0 && len(f.pre.inFlight) <= 1
	}
	for i := 0; i < 1000 && !reread(); i++ {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	if err := os.WriteFile(filepath.Join(mnt, "p", last, "new"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(mnt, "p", last))
	if err != nil {
		t.Fatal(err)
	}
	ino := fi.Sys().(*syscall.Stat_t).Ino
	openGate()
	for i := 0; i < 1000; i++ {
		f.pre.mu.Lock()
		l := f.pre.lists[ino]
		f.pre.mu.Unlock()
		if l != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	dropCaches(t)
	ents, err := os.ReadDir(filepath.Join(mnt, "p", last))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 {
		t.Errorf("%s lists %d entries, want new", last, len(ents))
	}
	if _, err := os.Lstat(filepath.Join(mnt, "p", last, "new")); err != nil {
		t.Errorf("lstat of the file created: %v", err)
	}
}

// TestPreStoreEmptyListingsBounded: listings of empty directories read
// ahead and never taken count nothing toward maxPrefetched, so they are
// never swept and the store grows with every empty directory read
// ahead (ls of directories with many empty subdirectories).
func TestPreStoreEmptyListingsBounded(t *testing.T) {
	var s preStore
	s.init()
	old := time.Now().Add(-time.Hour) // long expired
	for i := uint64(1); i <= 4*maxPrefetched; i++ {
		done := s.begin([]uint64{i})
		s.end([]uint64{i}, map[uint64]*preListing{i: {complete: true, at: old}}, done)
	}
	if n := len(s.lists); n > maxPrefetched {
		t.Errorf("%d listings held (all expired), bound %d", n, maxPrefetched)
	}
}

// ListXattrs fails: the library's Txattrwalk shares the file with the
// new fid, whose clunk would close an open file's descriptor.
func (f *hookFile) ListXattrs() ([]string, error) { return nil, linux.EOPNOTSUPP }
