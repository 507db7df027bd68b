//go:build linux

package p9server

import (
	"unsafe"

	"github.com/hugelgupf/p9/linux"
	"github.com/qmount/qmount/internal/p9ext"
	"golang.org/x/sys/unix"
)

// FIEMAP (linux/fiemap.h, linux/fs.h).
const (
	fsIocFiemap       = 0xC020660B // _IOWR('f', 11, struct fiemap)
	fiemapFlagSync    = 0x1
	fiemapExtentLast  = 0x1
	fiemapUnwritten   = 0x800
	fiemapBatch       = 512 // extents asked for per ioctl
	fsJournalDataFl   = 0x00004000
	fsEncryptFl       = 0x00000800
	fsInlineDataFl    = 0x10000000
	fsComprFl         = 0x00000004
	fsIocGetFlags     = 0x80086601 // FS_IOC_GETFLAGS, _IOR('f', 1, long)
	fiemapExtentBytes = 56
	fiemapHeaderBytes = 32
)

// fiemapSafe lists the file systems whose FIEMAP physical addresses are
// byte offsets on the one block device the file system was mounted from
// (not btrfs' logical addresses, not a volume manager's).
var fiemapSafe = map[int64]bool{
	unix.EXT4_SUPER_MAGIC: true, // ext2, ext3 and ext4
	unix.XFS_SUPER_MAGIC:  true,
}

// extentMap answers an EXTENTS request (p9ext): where the file's data
// from start on lies on the device, at most max extents. It refuses
// (EOPNOTSUPP) unless the server was given WithExtentMaps, the file
// system's addresses are device offsets, and every extent is plain data
// on the device once the file's dirty pages are written back.
func (f *file) extentMap(start uint64, limit uint32) ([]byte, error) {
	if !f.fs.s.extentMaps || !f.isRegular() {
		return nil, linux.EOPNOTSUPP
	}
	fd := f.io()
	if fd < 0 {
		// ioctls need a real descriptor, not the O_PATH one.
		rfd, err := f.reopen(unix.O_RDONLY | unix.O_NOATIME)
		if err == linux.EPERM {
			rfd, err = f.reopen(unix.O_RDONLY)
		}
		if err != nil {
			return nil, err
		}
		defer unix.Close(rfd)
		fd = rfd
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		return nil, errno(err)
	}
	if !fiemapSafe[int64(sfs.Type)] {
		return nil, linux.EOPNOTSUPP
	}
	// Data journalled (ext4 data=journal or chattr +j) may sit in the
	// journal, not yet where FIEMAP says; inline, encrypted or
	// compressed data is not plain bytes on the device.
	flags, err := unix.IoctlGetInt(fd, fsIocGetFlags)
	if err != nil || flags&(fsJournalDataFl|fsEncryptFl|fsInlineDataFl|fsComprFl) != 0 {
		return nil, linux.EOPNOTSUPP
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, errno(err)
	}
	m := p9ext.ExtentMap{Size: uint64(st.Size), Start: start, End: start}
	if err := fiemap(fd, &m, limit); err != nil {
		return nil, err
	}
	// The file must not have changed meanwhile (the client reads through
	// a map only while nothing writes the file through the mount).
	var st2 unix.Stat_t
	if err := unix.Fstat(fd, &st2); err != nil {
		return nil, errno(err)
	}
	if st2.Size != st.Size || st2.Mtim != st.Mtim {
		return nil, linux.EAGAIN
	}
	return p9ext.EncodeExtents(&m)
}

// fiemap fills m with the extents from m.Start on (at most limit), the
// first call writing the file's dirty pages back, and sets m.End to
// where the map stops describing the file.
func fiemap(fd int, m *p9ext.ExtentMap, limit uint32) error {
	buf := make([]byte, fiemapHeaderBytes+fiemapExtentBytes*fiemapBatch)
	next := m.Start
	for flags := uint32(fiemapFlagSync); ; flags = 0 {
		clear(buf)
		hdr := (*fiemapHeader)(unsafe.Pointer(&buf[0]))
		hdr.start = next
		hdr.length = ^uint64(0) - next
		hdr.flags = flags
		hdr.extentCount = fiemapBatch
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fsIocFiemap, uintptr(unsafe.Pointer(&buf[0]))); e != 0 {
			if e == unix.EOPNOTSUPP || e == unix.ENOTTY || e == unix.EBADR {
				return linux.EOPNOTSUPP
			}
			return errno(e)
		}
		n := int(hdr.mappedExtents)
		if n == 0 {
			// Nothing after next: the rest of the file is a hole.
			m.End = max(m.Size, next)
			return nil
		}
		for i := 0; i < n; i++ {
			fe := (*fiemapExtent)(unsafe.Pointer(&buf[fiemapHeaderBytes+i*fiemapExtentBytes]))
			if fe.flags&^(fiemapExtentLast|fiemapUnwritten) != 0 {
				// Unknown location, delayed allocation, encoded,
				// not aligned, inline, tail-packed, encrypted...
				return linux.EOPNOTSUPP
			}
			e := p9ext.Extent{Logical: fe.logical, Physical: fe.physical, Length: fe.length}
			if fe.flags&fiemapUnwritten != 0 {
				e.Flags = p9ext.ExtentUnwritten
			}
			if e.Logical < next { // the first extent may begin before start
				cut := next - e.Logical
				if cut >= e.Length {
					continue
				}
				e.Logical, e.Physical, e.Length = next, e.Physical+cut, e.Length-cut
			}
			if len(m.Extents) == int(limit) {
				m.End = e.Logical
				return nil
			}
			m.Extents = append(m.Extents, e)
			next = e.Logical + e.Length
			m.End = next
			if fe.flags&fiemapExtentLast != 0 {
				m.End = max(m.Size, next)
				return nil
			}
		}
	}
}

type fiemapHeader struct {
	start, length                            uint64
	flags, mappedExtents, extentCount, _resv uint32
}

type fiemapExtent struct {
	logical, physical, length uint64
	_resv64                   [2]uint64
	flags                     uint32
	_resv                     [3]uint32
}
