package vz

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qmount/qmount/internal/wire"
)

// arm64Image is the 64-byte header of an arm64 Linux Image
// (Documentation/arch/arm64/booting.rst), followed by some code.
func arm64Image() []byte {
	b := make([]byte, 4096)
	copy(b[0:], "MZ")                              // code0 with the EFI stub
	binary.LittleEndian.PutUint64(b[8:], 0)        // text_offset
	binary.LittleEndian.PutUint64(b[16:], 1<<20)   // image_size
	binary.LittleEndian.PutUint64(b[24:], 0b1010)  // flags: LE, 4K pages
	copy(b[56:], "ARM\x64")                        // magic
	binary.LittleEndian.PutUint32(b[60:], 0x10000) // PE header offset
	return b
}

func TestCheckKernel(t *testing.T) {
	dir := t.TempDir()
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write(arm64Image())
	w.Close()
	zboot := make([]byte, 1024)
	copy(zboot, "MZ\x00\x00zimg")
	copy(zboot[24:], "zstd")
	bz := make([]byte, 1024)
	copy(bz[0x202:], "HdrS")
	self, err := os.Executable() // this test binary: a real ELF file
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		content []byte // nil: use path as is
		path    string
		wantErr string // "" for success
	}{
		{name: "arm64 Image", content: arm64Image()},
		{name: "gzip", content: gz.Bytes(), wantErr: "gzip-compressed"},
		{name: "zboot", content: zboot, wantErr: "EFI zboot image (zstd-compressed)"},
		{name: "bzImage", content: bz, wantErr: "x86 bzImage"},
		{name: "elf", path: self, wantErr: "ELF vmlinux"},
		{name: "short", content: []byte("ARM"), wantErr: "not an arm64 Linux Image"},
		{name: "empty", content: []byte{}, wantErr: "not an arm64 Linux Image"},
		{name: "missing", path: filepath.Join(dir, "nope"), wantErr: "no such file"},
		{name: "directory", path: dir, wantErr: "reading kernel"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.path
			if tt.content != nil {
				path = filepath.Join(dir, tt.name)
				if err := os.WriteFile(path, tt.content, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			err := checkKernel(path)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("checkKernel: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("checkKernel: %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestCheckResources(t *testing.T) {
	// The bounds Virtualization.framework reports on Apple Silicon
	// (128 MiB minimum; the maximum depends on the Mac).
	lim := limits{MinMemory: 128 << 20, MaxMemory: 16 << 30, MinCPUs: 1, MaxCPUs: 8}
	tests := []struct {
		mem, cpus int
		wantMem   uint64
		wantCPUs  uint
		wantErr   string
	}{
		{mem: 512, cpus: 2, wantMem: 512 << 20, wantCPUs: 2},
		{mem: 128, cpus: 1, wantMem: 128 << 20, wantCPUs: 1},
		{mem: 16 << 10, cpus: 8, wantMem: 16 << 30, wantCPUs: 8},
		{mem: 64, cpus: 1, wantErr: "memory 64 MiB is outside what Virtualization.framework allows (128 to 16384 MiB)"},
		{mem: 32 << 10, cpus: 1, wantErr: "memory 32768 MiB is outside"},
		{mem: 512, cpus: 9, wantErr: "cpus 9 is outside what Virtualization.framework allows (1 to 8)"},
		{mem: 0, cpus: 1, wantErr: "memory 0 MiB must be positive"},
		{mem: 512, cpus: -1, wantErr: "cpus -1 must be positive"},
	}
	for _, tt := range tests {
		mem, cpus, err := checkResources(tt.mem, tt.cpus, lim)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("checkResources(%d, %d) = %v, want error %q", tt.mem, tt.cpus, err, tt.wantErr)
			}
			continue
		}
		if err != nil || mem != tt.wantMem || cpus != tt.wantCPUs {
			t.Errorf("checkResources(%d, %d) = %d, %d, %v; want %d, %d", tt.mem, tt.cpus, mem, cpus, err, tt.wantMem, tt.wantCPUs)
		}
	}
	// Both limits broken: both reported.
	_, _, err := checkResources(64, 99, lim)
	if err == nil || !strings.Contains(err.Error(), "memory") || !strings.Contains(err.Error(), "cpus") {
		t.Errorf("both out of range: %v", err)
	}
}

func TestCheckIdentifier(t *testing.T) {
	// Every serial the host gives out fits the framework's rules.
	for i := 0; i < 256; i++ {
		if err := checkIdentifier(wire.DiskSerial(i)); err != nil {
			t.Errorf("wire.DiskSerial(%d): %v", i, err)
		}
	}
	for _, bad := range []string{"", strings.Repeat("x", 21), "qmount 0", "qmount\n", "qmöunt"} {
		if err := checkIdentifier(bad); err == nil {
			t.Errorf("checkIdentifier(%q) accepted", bad)
		}
	}
	if err := checkIdentifier(strings.Repeat("x", 20)); err != nil {
		t.Errorf("20 bytes: %v", err)
	}
}

func TestKindOf(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	tests := []struct {
		path    string
		want    diskKind
		wantErr string
	}{
		{path: img, want: imageDisk},
		{path: os.DevNull, want: blockDisk}, // a character device, as macOS's /dev/rdiskN
		{path: dir, wantErr: "is a directory"},
		{path: sock, wantErr: "neither a regular file nor a device"},
	}
	// A block device, as macOS's /dev/diskN, where the host has one.
	if blk, _ := filepath.Glob("/dev/loop[0-9]*"); len(blk) > 0 {
		if fi, err := os.Stat(blk[0]); err == nil && fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0 {
			tests = append(tests, struct {
				path    string
				want    diskKind
				wantErr string
			}{path: blk[0], want: blockDisk})
		}
	}
	for _, tt := range tests {
		fi, err := os.Stat(tt.path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := kindOf(fi)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("kindOf(%s) = %v, %v; want error %q", tt.path, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("kindOf(%s) = %v, %v; want %v", tt.path, got, err, tt.want)
		}
	}
}

func TestConsoleCmdline(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "console=hvc0"},
		{"quiet qmount.debug=1", "quiet qmount.debug=1 console=hvc0"},
		{"console=ttyS0 quiet", "console=ttyS0 quiet console=hvc0"},
		{"console=hvc0 quiet", "quiet console=hvc0"},
		{"quiet  console=hvc0", "quiet console=hvc0"},
	}
	for _, tt := range tests {
		if got := consoleCmdline(tt.in); got != tt.want {
			t.Errorf("consoleCmdline(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
