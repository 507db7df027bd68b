package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// detectSpan is how much of a device DetectFSType reads.
const detectSpan = 0x11000

// DetectFSType names the mount(2) type of the filesystem whose first bytes
// r holds, from its superblock magic, or returns "" if it knows none. It
// is a fallback for mount requests without a type (the host's probe
// normally names it); strong magics are checked before weak ones.
func DetectFSType(r io.ReaderAt) (string, error) {
	b := make([]byte, detectSpan)
	n, err := r.ReadAt(b, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("reading superblock: %w", err)
	}
	b = b[:n]
	at := func(off int, magic string) bool {
		return off+len(magic) <= len(b) && string(b[off:off+len(magic)]) == magic
	}
	le16 := func(off int) uint16 {
		if off+2 > len(b) {
			return 0
		}
		return binary.LittleEndian.Uint16(b[off:])
	}
	le32 := func(off int) uint32 {
		if off+4 > len(b) {
			return 0
		}
		return binary.LittleEndian.Uint32(b[off:])
	}
	switch {
	case at(0, "hsqs"):
		return "squashfs", nil
	case at(0, "XFSB"):
		return "xfs", nil
	case at(0x10040, "_BHRfS_M"):
		return "btrfs", nil
	case at(3, "EXFAT   "):
		return "exfat", nil
	case at(3, "NTFS    "):
		return "ntfs3", nil
	case le32(1024) == 0xF2F52010:
		return "f2fs", nil
	case le32(1024) == 0xE0F5E1E2:
		return "erofs", nil
	case at(32768, "JFS1"):
		return "jfs", nil
	}
	// ECMA-167 volume recognition sequence: 2048-byte descriptors from 32 KiB.
	for off := 32768; off+6 <= len(b); off += 2048 {
		if at(off+1, "NSR02") || at(off+1, "NSR03") {
			return "udf", nil
		}
	}
	switch {
	case at(32769, "CD001"):
		return "iso9660", nil
	case le16(510) == 0xAA55 && (at(54, "FAT") || at(82, "FAT32")):
		return "vfat", nil
	case le16(1080) == 0xEF53:
		return "ext4", nil // the ext4 driver mounts ext2 and ext3 too
	case le16(1030) == 0x3434:
		return "nilfs2", nil
	case at(1024, "H+") || at(1024, "HX"):
		return "hfsplus", nil
	}
	return "", nil
}
