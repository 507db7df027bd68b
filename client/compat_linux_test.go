package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hugelgupf/p9/fsimpl/localfs"
	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"

	"github.com/qmount/qmount/internal/p9ext"
)

// xattrFile wraps a p9.File to answer GetXattr with getx (for every file
// walked from it).
type xattrFile struct {
	p9.File
	getx func(name string) ([]byte, error)
}

func (f *xattrFile) Walk(names []string) ([]p9.QID, p9.File, error) {
	q, nf, err := f.File.Walk(names)
	if err != nil {
		return q, nf, err
	}
	return q, &xattrFile{File: nf, getx: f.getx}, nil
}

func (f *xattrFile) WalkGetAttr(names []string) ([]p9.QID, p9.File, p9.AttrMask, p9.Attr, error) {
	return nil, nil, p9.AttrMask{}, p9.Attr{}, linux.ENOSYS
}

func (f *xattrFile) GetXattr(name string) ([]byte, error) { return f.getx(name) }

type xattrAttacher struct {
	p9.Attacher
	getx func(name string) ([]byte, error)
}

func (a xattrAttacher) Attach() (p9.File, error) {
	f, err := a.Attacher.Attach()
	if err != nil {
		return nil, err
	}
	return &xattrFile{File: f, getx: a.getx}, nil
}

// mountLibraryServer mounts dir served by hugelgupf/p9's own server over
// localfs (no READDIRPLUS, no statfs), with GetXattr answered by getx.
func mountLibraryServer(t *testing.T, dir string, getx func(string) ([]byte, error)) (*Mounted, string) {
	t.Helper()
	return mountAttacher(t, xattrAttacher{localfs.Attacher(dir), getx})
}

// mountAttacher mounts the tree of a, served by the p9 library's server.
func mountAttacher(t *testing.T, a p9.Attacher, opts ...Option) (*Mounted, string) {
	t.Helper()
	requireFUSE(t)
	cc, sc := socketPair(t)
	srv := p9.NewServer(a)
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Handle(sc, sc)
	}()
	mnt := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := Mount(ctx, cc, mnt, opts...)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		m.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		m.Unmount()
		<-done
		sc.Close()
		<-served
	})
	return m, mnt
}

// TestReaddirFallback: a server without READDIRPLUS is listed with
// Treaddir and a Twalkgetattr per entry.
func TestReaddirFallback(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 50; i++ {
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%02d", i)), []byte(strings.Repeat("x", i)), 0o644)
	}
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	m, mnt := mountLibraryServer(t, dir, func(string) ([]byte, error) { return nil, linux.EINVAL })
	ents, err := os.ReadDir(mnt)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 51 {
		t.Fatalf("%d entries, want 51", len(ents))
	}
	for _, e := range ents {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		var want int64
		if e.Name() == "sub" {
			if !e.IsDir() {
				t.Errorf("sub is not a directory")
			}
			continue
		}
		fmt.Sscanf(e.Name(), "f%d", &want)
		if info.Size() != want {
			t.Errorf("%s: size %d, want %d", e.Name(), info.Size(), want)
		}
	}
	st := m.Client().Stats().ByType
	if st["Treaddir"] == 0 {
		t.Errorf("no Treaddir sent: %v", st)
	}
	// getxattr of anything is ENODATA/unsupported, never a hang or EIO.
	buf := make([]byte, 64)
	_, err = syscall.Getxattr(filepath.Join(mnt, "f01"), "user.x", buf)
	if !errors.Is(err, syscall.ENODATA) && !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Errorf("getxattr: %v", err)
	}
}

// TestHostileReaddirPlus: a malformed READDIRPLUS batch fails the listing
// with EIO; the mount keeps working for other operations.
func TestHostileReaddirPlus(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), []byte("data"), 0o644)
	for _, tc := range []struct {
		name  string
		batch func() []byte
	}{
		{"garbage", func() []byte { return []byte("QRD1 this is not a batch") }},
		{"evil name", func() []byte {
			enc := p9ext.NewEncoder(1 << 16)
			enc.Add(p9ext.Entry{Name: "ok", Valid: p9.AttrMaskAll, Attr: p9.Attr{Mode: p9.ModeRegular | 0o644, NLink: 1}})
			b := enc.Bytes(true)
			return []byte(strings.Replace(string(b), "ok", "..", 1))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, mnt := mountLibraryServer(t, dir, func(name string) ([]byte, error) {
				if strings.HasPrefix(name, p9ext.ReaddirPlusPrefix) {
					return tc.batch(), nil
				}
				return nil, linux.ENODATA
			})
			_, err := os.ReadDir(mnt)
			if !errors.Is(err, syscall.EIO) {
				t.Errorf("readdir = %v, want EIO", err)
			}
			b, err := os.ReadFile(filepath.Join(mnt, "f"))
			if err != nil || string(b) != "data" {
				t.Errorf("read after bad batch: %q, %v", b, err)
			}
		})
	}
}

// TestReadOnly: a read-only mount refuses changes with EROFS.
func TestReadOnly(t *testing.T) {
	data := t.TempDir()
	os.WriteFile(filepath.Join(data, "f"), []byte("data"), 0o644)
	e := mountEnv(t, data, WithReadOnly())
	if b, err := os.ReadFile(e.path("f")); err != nil || string(b) != "data" {
		t.Fatalf("read: %q %v", b, err)
	}
	for name, err := range map[string]error{
		"create": os.WriteFile(e.path("g"), nil, 0o644),
		"write":  os.WriteFile(e.path("f"), []byte("x"), 0o644),
		"mkdir":  os.Mkdir(e.path("d"), 0o755),
		"remove": os.Remove(e.path("f")),
		"chmod":  os.Chmod(e.path("f"), 0o600),
	} {
		if !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s: %v, want EROFS", name, err)
		}
	}
	names, _ := os.ReadDir(e.mnt)
	var got []string
	for _, n := range names {
		got = append(got, n.Name())
	}
	sort.Strings(got)
	if strings.Join(got, ",") != "f" {
		t.Errorf("entries %v", got)
	}
}
