package initramfs

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qmount/qmount/kernels"
	"github.com/u-root/u-root/pkg/cpio"
)

func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test directory")
		}
		dir = parent
	}
}

func needTool(t testing.TB, name, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s not installed (apt-get install %s)", name, pkg)
	}
}

var (
	initOnce sync.Map // arch -> *initBuild
)

type initBuild struct {
	once sync.Once
	path string
	err  error
}

// testInit builds testdata/bootinit, a static init, for arch.
func testInit(t testing.TB, arch string) string {
	t.Helper()
	v, _ := initOnce.LoadOrStore(arch, &initBuild{})
	b := v.(*initBuild)
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "qmount-bootinit-")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, "init")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", b.path, "./testdata/bootinit")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = &buildErr{err, string(out)}
		}
	})
	if b.err != nil {
		t.Fatalf("building test init: %v", b.err)
	}
	return b.path
}

type buildErr struct {
	err error
	out string
}

func (e *buildErr) Error() string { return e.err.Error() + ": " + e.out }

// debianKernel returns the Debian kernel for arch from the build cache
// that `make guests` fills, fetching it when missing.
func debianKernel(t testing.TB, arch string) *kernels.Kernel {
	t.Helper()
	for _, tool := range []string{"apt-get", "apt-cache", "dpkg-deb"} {
		needTool(t, tool, "apt")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	k, err := kernels.Fetch(ctx, kernels.Config{Arch: arch, CacheDir: filepath.Join(repoRoot(t), "build", "cache")})
	if err != nil {
		if os.Geteuid() != 0 && arch != "amd64" {
			t.Skipf("fetching the %s kernel needs root (dpkg --add-architecture): %v", arch, err)
		}
		t.Fatalf("fetching the Debian %s kernel: %v", arch, err)
	}
	return k
}

// readArchive reads all records of a newc archive, with their contents.
type entry struct {
	cpio.Info
	Data []byte
}

func readArchive(t testing.TB, data []byte) []entry {
	t.Helper()
	rr := cpio.Newc.Reader(bytes.NewReader(data))
	var out []entry
	// The reader turns the trailer record into io.EOF; check it is there
	// and is the last record.
	sawTrailer := bytes.HasSuffix(bytes.TrimRight(data, "\x00"), []byte("070701"+strings.Repeat("0", 8*11)+"0000000B00000000"+cpio.Trailer))
	for {
		r, err := rr.ReadRecord()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading cpio record %d: %v", len(out), err)
		}
		var b []byte
		if r.ReaderAt != nil && r.FileSize > 0 {
			b = make([]byte, r.FileSize)
			if _, err := r.ReadAt(b, 0); err != nil && err != io.EOF {
				t.Fatalf("reading %s: %v", r.Name, err)
			}
		}
		out = append(out, entry{r.Info, b})
	}
	if !sawTrailer {
		t.Fatal("archive has no trailer")
	}
	return out
}

func byName(es []entry) map[string]entry {
	m := map[string]entry{}
	for _, e := range es {
		m[e.Name] = e
	}
	return m
}

func modulesDepLine(dep, path string) (string, bool) {
	for _, l := range strings.Split(dep, "\n") {
		if p, rest, ok := strings.Cut(l, ":"); ok && p == path {
			return strings.TrimSpace(rest), true
		}
	}
	return "", false
}
