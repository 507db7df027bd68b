package supervisor

// DefaultDiskUID and DefaultDiskGID are the owner that files created
// through an --owner=me mount get on the disk: the first user of most
// Linux systems.
const (
	DefaultDiskUID = 1000
	DefaultDiskGID = 1000
)

// OwnerMapper maps owners between host and guest for --owner=me: every
// file appears owned by the mounting user (UID, GID), and what that user
// creates is stored as DiskUID/DiskGID. It implements client.IDMapper.
type OwnerMapper struct {
	UID, GID         uint32
	DiskUID, DiskGID uint32
}

// ToHost maps an owner stored on the disk to the owner shown on the host.
func (m OwnerMapper) ToHost(uid, gid uint32) (uint32, uint32) { return m.UID, m.GID }

// ToGuest maps a host caller or chown target to the owner stored on disk.
func (m OwnerMapper) ToGuest(uid, gid uint32) (uint32, uint32) {
	if uid == m.UID {
		uid = m.DiskUID
	}
	if gid == m.GID {
		gid = m.DiskGID
	}
	return uid, gid
}

// Mapper returns the owner mapping o asks for, or nil to keep the disk's
// owners.
func (o Owner) Mapper() *OwnerMapper {
	if o.Mode != OwnerMe {
		return nil
	}
	return &OwnerMapper{UID: uint32(o.UID), GID: uint32(o.GID), DiskUID: DefaultDiskUID, DiskGID: DefaultDiskGID}
}
