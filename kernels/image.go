package kernels

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
)

// Compression is a compression format found by its magic bytes.
type Compression string

// The formats kernels are shipped in.
const (
	None  Compression = "none"
	Gzip  Compression = "gzip"
	XZ    Compression = "xz"
	Zstd  Compression = "zstd"
	LZMA  Compression = "lzma"
	Bzip2 Compression = "bzip2"
	LZ4   Compression = "lz4"
	LZO   Compression = "lzo"
)

// DetectCompression names the compression of data from its first bytes;
// None when no known magic matches.
func DetectCompression(data []byte) Compression {
	switch {
	case bytes.HasPrefix(data, []byte{0x1f, 0x8b}):
		return Gzip
	case bytes.HasPrefix(data, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}):
		return XZ
	case bytes.HasPrefix(data, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return Zstd
	case bytes.HasPrefix(data, []byte{0x5d, 0x00, 0x00}):
		return LZMA
	case bytes.HasPrefix(data, []byte("BZh")):
		return Bzip2
	case bytes.HasPrefix(data, []byte{0x02, 0x21, 0x4c, 0x18}): // lz4 legacy
		return LZ4
	case bytes.HasPrefix(data, []byte{0x89, 'L', 'Z', 'O'}):
		return LZO
	}
	return None
}

// decompress returns the decompressed data. gzip and bzip2 are done in Go;
// xz, lzma and zstd with the xz and zstd tools (the kernel's xz streams use
// BCJ filters that Go xz libraries lack). Trailing bytes after the first
// stream are ignored, as the kernel's own decompressors do.
func decompress(ctx context.Context, c Compression, data []byte) ([]byte, error) {
	switch c {
	case None:
		return data, nil
	case Gzip:
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("reading gzip header: %w", err)
		}
		zr.Multistream(false)
		out, err := io.ReadAll(zr)
		if err != nil {
			return nil, fmt.Errorf("gunzip: %w", err)
		}
		return out, nil
	case Bzip2:
		out, err := io.ReadAll(bzip2.NewReader(bytes.NewReader(data)))
		if err != nil {
			return nil, fmt.Errorf("bunzip2: %w", err)
		}
		return out, nil
	case XZ:
		return filter(ctx, data, "xz", "-dc", "--single-stream", "-q")
	case LZMA:
		return filter(ctx, data, "xz", "-dc", "--format=lzma", "-q")
	case Zstd:
		return filter(ctx, data, "zstd", "-dc", "-q")
	}
	return nil, fmt.Errorf("%s compression is not supported", c)
}

// filter pipes data through an external decompressor.
func filter(ctx context.Context, data []byte, name string, args ...string) ([]byte, error) {
	if _, err := exec.LookPath(name); err != nil {
		return nil, fmt.Errorf("%s is needed to decompress (apt-get install %s): %w", name, toolPackage(name), err)
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = bytes.NewReader(data)
	var out, stderr bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &stderr
	err := cmd.Run()
	// xz and zstd stop at the end of the stream; a complaint about trailing
	// garbage still leaves the full output.
	if err != nil && out.Len() == 0 {
		return nil, fmt.Errorf("%s %v: %w: %s", name, args, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out.Bytes(), nil
}

func toolPackage(name string) string {
	switch name {
	case "xz":
		return "xz-utils"
	case "dpkg-deb":
		return "dpkg"
	case "apt-get", "apt-cache":
		return "apt"
	}
	return name
}

// x86 boot protocol offsets (Documentation/arch/x86/boot.rst).
const (
	bzSetupSects    = 0x1f1
	bzHeaderMagic   = 0x202
	bzVersion       = 0x206
	bzPayloadOffset = 0x248
	bzPayloadLength = 0x24c
)

// BzImagePayload returns the compressed kernel inside an x86 bzImage and its
// compression. It needs boot protocol 2.08 or later (Linux 2.6.26+).
func BzImagePayload(bz []byte) ([]byte, Compression, error) {
	if len(bz) < 0x260 || string(bz[bzHeaderMagic:bzHeaderMagic+4]) != "HdrS" {
		return nil, None, errors.New("not a bzImage (no HdrS setup header)")
	}
	if v := binary.LittleEndian.Uint16(bz[bzVersion:]); v < 0x208 {
		return nil, None, fmt.Errorf("boot protocol %#x has no payload fields (need 2.08+)", v)
	}
	setup := int(bz[bzSetupSects])
	if setup == 0 {
		setup = 4
	}
	start := (setup + 1) * 512
	off := int(binary.LittleEndian.Uint32(bz[bzPayloadOffset:]))
	n := int(binary.LittleEndian.Uint32(bz[bzPayloadLength:]))
	if start+off+n > len(bz) || n < 8 {
		return nil, None, fmt.Errorf("payload %d+%d+%d out of the %d-byte bzImage", start, off, n, len(bz))
	}
	p := bz[start+off : start+off+n]
	return p, DetectCompression(p), nil
}

// ExtractVmlinux returns the uncompressed vmlinux ELF inside an x86 bzImage.
func ExtractVmlinux(ctx context.Context, bz []byte) ([]byte, error) {
	p, c, err := BzImagePayload(bz)
	if err != nil {
		return nil, err
	}
	if c == None {
		return nil, fmt.Errorf("unknown payload compression (magic % x)", p[:6])
	}
	// All formats but gzip end with the uncompressed size (size_append in
	// the kernel's Makefile.lib); strip it so that the tools see one
	// clean stream, and use it to check the result.
	var want uint32
	if c != Gzip {
		want = binary.LittleEndian.Uint32(p[len(p)-4:])
		p = p[:len(p)-4]
	}
	out, err := decompress(ctx, c, p)
	if err != nil {
		return nil, fmt.Errorf("decompressing %s payload: %w", c, err)
	}
	if want != 0 && uint32(len(out)) != want {
		return nil, fmt.Errorf("decompressed %s payload is %d bytes, the trailer says %d", c, len(out), want)
	}
	if !bytes.HasPrefix(out, []byte(elf.ELFMAG)) {
		return nil, errors.New("decompressed payload is not an ELF file")
	}
	return out, nil
}

// XenElfnotePhys32Entry is the ELF note type (owner "Xen") that holds the
// 32-bit PVH entry point QEMU's -kernel uses to boot a vmlinux directly.
const XenElfnotePhys32Entry = 18

// PVHEntry returns the PVH entry point of a vmlinux ELF file, or an error
// when it has none (the kernel was built without CONFIG_PVH).
func PVHEntry(vmlinux []byte) (uint64, error) {
	f, err := elf.NewFile(bytes.NewReader(vmlinux))
	if err != nil {
		return 0, fmt.Errorf("parsing vmlinux ELF: %w", err)
	}
	defer f.Close()
	var notes [][]byte
	for _, p := range f.Progs {
		if p.Type == elf.PT_NOTE {
			b, err := io.ReadAll(p.Open())
			if err != nil {
				return 0, fmt.Errorf("reading PT_NOTE: %w", err)
			}
			notes = append(notes, b)
		}
	}
	order := f.ByteOrder
	for _, b := range notes {
		for len(b) >= 12 {
			namesz := int(order.Uint32(b[0:]))
			descsz := int(order.Uint32(b[4:]))
			typ := order.Uint32(b[8:])
			b = b[12:]
			nameEnd := align4(namesz)
			descEnd := nameEnd + align4(descsz)
			if namesz > len(b) || descEnd > len(b) || nameEnd+descsz > len(b) {
				break
			}
			name := string(bytes.TrimRight(b[:namesz], "\x00"))
			desc := b[nameEnd : nameEnd+descsz]
			if name == "Xen" && typ == XenElfnotePhys32Entry {
				switch descsz {
				case 4:
					return uint64(order.Uint32(desc)), nil
				case 8:
					return order.Uint64(desc), nil
				}
				return 0, fmt.Errorf("PVH note has a %d-byte descriptor", descsz)
			}
			b = b[descEnd:]
		}
	}
	return 0, errors.New("no Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY) in vmlinux: kernel lacks CONFIG_PVH")
}

func align4(n int) int { return (n + 3) &^ 3 }

// arm64ImageMagic is at offset 56 of an arm64 Image (booting.rst).
const arm64ImageMagic = "ARM\x64"

// IsARM64Image reports whether b is an uncompressed arm64 Image.
func IsARM64Image(b []byte) bool {
	return len(b) >= 64 && string(b[56:60]) == arm64ImageMagic
}

// ARM64Image returns the uncompressed arm64 Image for a vmlinuz as Debian
// ships it: already an Image, gzip-compressed, or an EFI zboot image.
func ARM64Image(ctx context.Context, vmlinuz []byte) ([]byte, error) {
	if IsARM64Image(vmlinuz) {
		return vmlinuz, nil
	}
	var (
		out []byte
		err error
	)
	switch {
	case len(vmlinuz) >= 32 && string(vmlinuz[0:2]) == "MZ" && string(vmlinuz[4:8]) == "zimg":
		// EFI zboot (CONFIG_EFI_ZBOOT): payload offset and size at 8 and 12.
		off := binary.LittleEndian.Uint32(vmlinuz[8:])
		n := binary.LittleEndian.Uint32(vmlinuz[12:])
		if uint64(off)+uint64(n) > uint64(len(vmlinuz)) {
			return nil, errors.New("zboot payload out of the file")
		}
		p := vmlinuz[off : off+n]
		c := DetectCompression(p)
		if c != Gzip && c != None {
			// zboot payloads carry the size trailer too.
			p = p[:len(p)-4]
		}
		out, err = decompress(ctx, c, p)
	default:
		c := DetectCompression(vmlinuz)
		if c == None {
			return nil, errors.New("not an arm64 Image and no known compression")
		}
		out, err = decompress(ctx, c, vmlinuz)
	}
	if err != nil {
		return nil, fmt.Errorf("decompressing arm64 kernel: %w", err)
	}
	if !IsARM64Image(out) {
		return nil, errors.New("decompressed kernel is not an arm64 Image (no ARM\\x64 magic at 56)")
	}
	return out, nil
}

// writeFileAtomic writes data to path through a temporary file and rename.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp := fmt.Sprintf("%s.tmp%d", path, os.Getpid())
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
