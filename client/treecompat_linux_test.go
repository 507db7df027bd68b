package client

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/hugelgupf/p9/fsimpl/localfs"
	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"

	"github.com/qmount/qmount/internal/p9ext"
)

// plusFile wraps a localfs file of the p9 library's server with a
// READDIRPLUS of its own (cookies: index + 1) and READDIRTREE answered
// by tree, as an older or a hostile server would.
type plusFile struct {
	p9.File
	path string
	tree func(dir, name string) ([]byte, error)
}

func (f *plusFile) Walk(names []string) ([]p9.QID, p9.File, error) {
	q, nf, err := f.File.Walk(names)
	if err != nil {
		return q, nf, err
	}
	return q, &plusFile{File: nf, path: filepath.Join(append([]string{f.path}, names...)...), tree: f.tree}, nil
}

func (f *plusFile) WalkGetAttr(names []string) ([]p9.QID, p9.File, p9.AttrMask, p9.Attr, error) {
	return nil, nil, p9.AttrMask{}, p9.Attr{}, linux.ENOSYS
}

func (f *plusFile) GetXattr(name string) ([]byte, error) {
	if off, max, _, ok := p9ext.ParseReaddirPlusName(name); ok {
		return plusBatch(f.path, off, max)
	}
	if strings.HasPrefix(name, p9ext.ReaddirTreePrefix) {
		return f.tree(f.path, name)
	}
	return nil, linux.ENODATA
}

// plusEntry describes name in dir with its attributes.
func plusEntry(dir, name string, off uint64) (p9ext.Entry, error) {
	var st syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(dir, name), &st); err != nil {
		return p9ext.Entry{}, err
	}
	// The library's QID paths are its own (not inode numbers).
	d, err := localfs.Attacher(dir).Attach()
	if err != nil {
		return p9ext.Entry{}, err
	}
	qids, _, err := d.Walk([]string{name})
	if err != nil {
		return p9ext.Entry{}, err
	}
	mode := p9.FileMode(st.Mode)
	return p9ext.Entry{Name: name, Offset: off, Type: mode.QIDType(),
		QID:   qids[0],
		Valid: p9.AttrMask{Mode: true, NLink: true, UID: true, GID: true, Size: true, Blocks: true, MTime: true, ATime: true, CTime: true},
		Attr: p9.Attr{Mode: mode, NLink: p9.NLink(st.Nlink), UID: p9.UID(st.Uid), GID: p9.GID(st.Gid), Size: uint64(st.Size),
			BlockSize: uint64(st.Blksize), Blocks: uint64(st.Blocks), MTimeSeconds: uint64(st.Mtim.Sec), MTimeNanoSeconds: uint64(st.Mtim.Nsec)}}, nil
}

// plusBatch lists dir after cookie off.
func plusBatch(dir string, off uint64, max uint32) ([]byte, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, linux.EIO
	}
	enc := p9ext.NewEncoder(max)
	for i := int(off); i < len(ents); i++ {
		e, err := plusEntry(dir, ents[i].Name(), uint64(i+1))
		if err != nil {
			return nil, linux.EIO
		}
		if ok, _ := enc.Add(e); !ok {
			return enc.Bytes(false), nil
		}
	}
	return enc.Bytes(true), nil
}

type plusAttacher struct {
	p9.Attacher
	dir  string
	tree func(dir, name string) ([]byte, error)
}

func (a plusAttacher) Attach() (p9.File, error) {
	f, err := a.Attacher.Attach()
	if err != nil {
		return nil, err
	}
	return &plusFile{File: f, path: a.dir, tree: a.tree}, nil
}

// mountPlusServer mounts dir served by the p9 library's server with
// plusFile's READDIRPLUS and READDIRTREE answered by tree.
func mountPlusServer(t *testing.T, dir string, tree func(dir, name string) ([]byte, error)) (*Mounted, string) {
	t.Helper()
	return mountAttacher(t, plusAttacher{localfs.Attacher(dir), dir, tree})
}

// TestReaddirTreeFallback: a server without READDIRTREE, or one that
// answers it with garbage or listings of directories it was not asked
// for, is listed as before, with the same results; garbage turns the
// read-ahead off.
func TestReaddirTreeFallback(t *testing.T) {
	data := t.TempDir()
	makeTree(t, filepath.Join(data, "tree"), 10, 20)
	want := findList(t, filepath.Join(data, "tree"), true)
	wrongDir := func(dir, name string) ([]byte, error) {
		// Lists d001 under the name of the first subdirectory asked.
		e, err := plusEntry(dir, "d001", 1)
		if err != nil {
			return nil, linux.EIO
		}
		enc := p9ext.NewEncoder(1 << 16)
		enc.Add(p9ext.Entry{Name: "evil", Offset: 1, Valid: p9.AttrMaskAll, Attr: p9.Attr{Mode: p9.ModeRegular | 0o644, NLink: 1}})
		te := p9ext.NewTreeEncoder(1 << 16)
		te.Add("d000", 1, e.QID, enc.Bytes(true))
		return te.Bytes(true), nil
	}
	for _, tc := range []struct {
		name   string
		tree   func(dir, name string) ([]byte, error)
		treeOn int32
	}{
		{"old server", func(string, string) ([]byte, error) { return nil, linux.EINVAL }, -1},
		{"garbage", func(string, string) ([]byte, error) { return []byte("QRT1 garbage"), nil }, -1},
		{"wrong directory", wrongDir, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, mnt := mountPlusServer(t, data, tc.tree)
			dropCaches(t)
			if got := findList(t, filepath.Join(mnt, "tree"), true); got != want {
				t.Errorf("find through the mount differs from find on the directory:\n%s\nwant\n%s", got, want)
			}
			if got := m.root.fsys.tree.Load(); got != tc.treeOn {
				t.Errorf("READDIRTREE state %d, want %d", got, tc.treeOn)
			}
		})
	}
}
