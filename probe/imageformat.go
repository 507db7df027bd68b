package probe

import (
	"encoding/binary"
	"io"
)

// ImageFormat returns the disk image container format of r by its magic:
// "qcow2" (also qcow version 1, as "qcow"), "vmdk" (sparse extent),
// "vdi", "vhdx", or "raw" for anything else. It never guesses from a file
// name, and anything unrecognised is raw.
func ImageFormat(r io.ReaderAt) string {
	var b [72]byte
	n, _ := r.ReadAt(b[:], 0)
	h := b[:n]
	has := func(off int, s string) bool { return len(h) >= off+len(s) && string(h[off:off+len(s)]) == s }
	switch {
	case has(0, "QFI\xfb") && len(h) >= 8:
		if binary.BigEndian.Uint32(h[4:]) == 1 {
			return "qcow"
		}
		return "qcow2"
	case has(0, "KDMV"):
		return "vmdk"
	case has(0, "vhdxfile"):
		return "vhdx"
	case len(h) >= 68 && binary.LittleEndian.Uint32(h[64:]) == 0xbeda107f:
		return "vdi"
	}
	return "raw"
}
