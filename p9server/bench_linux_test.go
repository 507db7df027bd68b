//go:build linux

package p9server

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/hugelgupf/p9/p9"
	"github.com/qmount/qmount/internal/p9ext"
	"golang.org/x/sys/unix"
)

// Benchmarks of the server over a socketpair with the library's client
// (go test -run '^$' -bench . ./p9server/).

func BenchmarkRead1MiB(b *testing.B) {
	dir := b.TempDir()
	must(b, os.WriteFile(filepath.Join(dir, "f"), make([]byte, 64<<20), 0o644))
	_, _, root := connect(b, dir)
	f := walk(b, root, "f")
	defer f.Close()
	_, _, err := f.Open(p9.ReadOnly)
	must(b, err)
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := f.ReadAt(buf, int64(i%64)<<20); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWrite1MiB(b *testing.B) {
	dir := b.TempDir()
	_, _, root := connect(b, dir)
	must(b, p9Create(b, root, "f", p9.WriteOnly, 0o644, ""))
	f := walk(b, root, "f")
	defer f.Close()
	_, _, err := f.Open(p9.WriteOnly)
	must(b, err)
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := f.WriteAt(buf, int64(i%64)<<20); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWalkGetAttrClunk is an uncached stat: Twalkgetattr + Tclunk.
func BenchmarkWalkGetAttrClunk(b *testing.B) {
	dir := b.TempDir()
	baseTree(b, dir)
	_, _, root := connect(b, dir)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_, f, _, _, err := root.WalkGetAttr([]string{"a.txt"})
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

// BenchmarkReaddirPlus10k lists 10,000 entries with attributes and xattr
// names in 1 MiB batches; it reports entries per second.
func BenchmarkReaddirPlus10k(b *testing.B) {
	dir := b.TempDir()
	dfd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY, 0)
	must(b, err)
	for i := 0; i < 10000; i++ {
		fd, err := unix.Openat(dfd, fmt.Sprintf("file%05d", i), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		must(b, err)
		unix.Close(fd)
	}
	unix.Close(dfd)
	rc := newRawClient(b, newServer(b, dir), DefaultMessageSize)
	rc.attach(1)
	b.ResetTimer()
	entries := 0
	for i := 0; i < b.N; i++ {
		var cookie uint64
		for {
			buf, err := rc.getXattr(1, p9ext.ReaddirPlusName(cookie, 1<<20))
			must(b, err)
			batch, err := p9ext.Decode(buf)
			must(b, err)
			entries += len(batch.Entries)
			if batch.EOF {
				break
			}
			cookie = batch.Entries[len(batch.Entries)-1].Offset
		}
	}
	b.ReportMetric(float64(entries)/b.Elapsed().Seconds(), "entries/s")
}
