package vz

// The checks in this file are pure Go and build on every platform, so
// that they are tested on the Linux CI hosts too; everything that touches
// Virtualization.framework is in _darwin.go files.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
)

// checkKernel verifies that path holds what VZLinuxBootLoader boots on
// Apple Silicon: an uncompressed arm64 Linux Image. The framework fails on
// anything else with an unhelpful "internal virtualization error" at
// start, so the common mistakes get their own message here.
func checkKernel(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("opening kernel: %w", err)
	}
	defer f.Close()
	// arm64 Image header (Documentation/arch/arm64/booting.rst): 64 bytes,
	// magic "ARM\x64" at offset 56. The rest is read to name other
	// formats (x86's "HdrS" is at 0x202).
	var hdr [0x210]byte
	n, err := io.ReadFull(f, hdr[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return fmt.Errorf("reading kernel %s: %w", path, err)
	}
	h := hdr[:n]
	switch {
	case len(h) >= 64 && bytes.Equal(h[56:60], []byte("ARM\x64")):
		return nil
	case bytes.HasPrefix(h, []byte{0x1f, 0x8b}):
		return fmt.Errorf("kernel %s is gzip-compressed: vz boots only an uncompressed arm64 Image (gunzip it)", path)
	case len(h) >= 32 && bytes.Equal(h[0:2], []byte("MZ")) && bytes.Equal(h[4:8], []byte("zimg")):
		// EFI zboot: the compression's name is at offset 24.
		return fmt.Errorf("kernel %s is an EFI zboot image (%s-compressed): vz boots only an uncompressed arm64 Image",
			path, strings.TrimRight(string(h[24:32]), "\x00"))
	case len(h) >= 4 && bytes.Equal(h[0:4], []byte("\x7fELF")):
		return fmt.Errorf("kernel %s is an ELF vmlinux: vz boots only an arm64 Image (arch/arm64/boot/Image)", path)
	case len(h) >= 0x206 && bytes.Equal(h[0x202:0x206], []byte("HdrS")):
		return fmt.Errorf("kernel %s is an x86 bzImage: vz on Apple Silicon boots only an arm64 Image", path)
	}
	return fmt.Errorf("kernel %s is not an arm64 Linux Image (no ARM\\x64 magic at offset 56)", path)
}

// limits are the framework's bounds for a VM's size.
type limits struct {
	MinMemory, MaxMemory uint64 // bytes
	MinCPUs, MaxCPUs     uint
}

// checkResources converts the requested size to the framework's units and
// checks it against lim.
func checkResources(memoryMiB, cpus int, lim limits) (memBytes uint64, ncpu uint, err error) {
	if memoryMiB <= 0 {
		return 0, 0, fmt.Errorf("memory %d MiB must be positive", memoryMiB)
	}
	if cpus <= 0 {
		return 0, 0, fmt.Errorf("cpus %d must be positive", cpus)
	}
	memBytes = uint64(memoryMiB) << 20
	ncpu = uint(cpus)
	var errs []error
	if memBytes < lim.MinMemory || memBytes > lim.MaxMemory {
		errs = append(errs, fmt.Errorf("memory %d MiB is outside what Virtualization.framework allows (%d to %d MiB)",
			memoryMiB, (lim.MinMemory+(1<<20)-1)>>20, lim.MaxMemory>>20))
	}
	if ncpu < lim.MinCPUs || ncpu > lim.MaxCPUs {
		errs = append(errs, fmt.Errorf("cpus %d is outside what Virtualization.framework allows (%d to %d)",
			cpus, lim.MinCPUs, lim.MaxCPUs))
	}
	return memBytes, ncpu, errors.Join(errs...)
}

// maxIdentifierLen is the longest virtio-blk device identifier
// VZVirtioBlockDeviceConfiguration accepts (the virtio spec's
// VIRTIO_BLK_ID_BYTES).
const maxIdentifierLen = 20

// checkIdentifier checks a disk serial against the framework's rules for
// blockDeviceIdentifier: at most 20 bytes, ASCII. We also refuse control
// characters and spaces, which the guest's sysfs serial would not show
// faithfully.
func checkIdentifier(serial string) error {
	if serial == "" {
		return errors.New("empty disk serial")
	}
	if len(serial) > maxIdentifierLen {
		return fmt.Errorf("disk serial %q is longer than %d bytes", serial, maxIdentifierLen)
	}
	for i := 0; i < len(serial); i++ {
		if c := serial[i]; c <= ' ' || c >= 0x7f {
			return fmt.Errorf("disk serial %q has a byte 0x%02x outside printable ASCII", serial, c)
		}
	}
	return nil
}

// diskKind is how a disk is attached.
type diskKind int

const (
	imageDisk diskKind = iota + 1 // regular file: VZDiskImageStorageDeviceAttachment
	blockDisk                     // device node: VZDiskBlockDeviceStorageDeviceAttachment
)

func (k diskKind) String() string {
	switch k {
	case imageDisk:
		return "image"
	case blockDisk:
		return "block device"
	}
	return fmt.Sprintf("diskKind(%d)", int(k))
}

// kindOf says how a disk with this file info is attached. On macOS
// /dev/diskN is a block device and /dev/rdiskN a character device; both
// go through the block device attachment.
func kindOf(fi fs.FileInfo) (diskKind, error) {
	m := fi.Mode()
	switch {
	case m.IsRegular():
		return imageDisk, nil
	case m&fs.ModeDevice != 0: // block, or character with ModeCharDevice also set
		return blockDisk, nil
	case m.IsDir():
		return 0, fmt.Errorf("%s is a directory, not a disk or image", fi.Name())
	}
	return 0, fmt.Errorf("%s is neither a regular file nor a device (mode %v)", fi.Name(), m)
}

// consoleCmdline makes the guest's console the virtio console (hvc0),
// which is what vz attaches to the console log. A console= already on the
// command line is kept (the kernel writes to all of them; the last one
// becomes /dev/console, so hvc0 goes last).
func consoleCmdline(cmdline string) string {
	fields := strings.Fields(cmdline)
	if n := len(fields); n > 0 && fields[n-1] == "console=hvc0" {
		return strings.Join(fields, " ")
	}
	out := fields[:0]
	for _, f := range fields {
		if f != "console=hvc0" {
			out = append(out, f)
		}
	}
	return strings.Join(append(out, "console=hvc0"), " ")
}
