package supervisor

import (
	"io"
	"os"

	"github.com/qmount/qmount/internal/wire"
)

// directRegion opens the region of the disk the guest says its file
// system lies on (wire.ExtentSource), for reading file data on the host
// (FUSEOptions.Direct), or returns nil when the mount does not allow
// it: only a plain file system on one raw disk (or one of its
// partitions), not inside LUKS, LVM or RAID, whose guest gives extent
// maps, on a platform where the host sees the guest's writes.
func (s *super) directRegion(m *wire.Message) *DirectRegion {
	p := s.plan
	if !directReads || p.NoDirectRead || m == nil || m.Extents == nil {
		return nil
	}
	x := m.Extents
	if len(p.Disks) != 1 || x.Disk != 0 || p.Encrypted || p.RAID || p.VG != "" ||
		len(p.Formats) != 1 || p.Formats[0] != "raw" {
		return nil
	}
	f, err := os.Open(p.Disks[0])
	if err != nil {
		s.log.Info("reading file data through the guest", "why", err)
		return nil
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil || x.Offset+x.Size > size {
		f.Close()
		s.log.Warn("reading file data through the guest: the guest's device is not within the disk",
			"offset", x.Offset, "size", x.Size, "disk_size", size, "err", err)
		return nil
	}
	s.log.Info("reading file data from the disk where the guest maps it", "offset", x.Offset, "size", x.Size)
	return &DirectRegion{File: f, Offset: x.Offset, Size: x.Size}
}
