// Package probe finds out what a disk or disk image holds, without
// mounting anything: the partition table (GPT with its protective or hybrid
// MBR, or an MBR with extended and logical partitions), and in each
// partition (and on the whole device) the filesystem or container, with
// label, UUID and size.
//
// It is pure Go and reads only through an io.ReaderAt, so it works the same
// on Linux and macOS, on block devices and image files. The host uses it to
// choose the guest (and its kernel modules) before booting anything; the
// guest's real Linux drivers do all the mounting.
//
// Detection follows util-linux's libblkid (2.38): the same signatures,
// sanity checks and probing order, the same TYPE names (ext4, vfat,
// crypto_LUKS, LVM2_member, linux_raid_member, zfs_member, ...) and UUIDs
// and labels formatted exactly as `blkid -p` prints them. Containers carry
// more detail than blkid gives: LUKS cipher and key slots, the LVM volume
// group with its logical volumes (parsed from the metadata text area), md
// array level and member role, ZFS pool name, btrfs device ids.
//
// Hostile input: every read is bounded (at most 4 MiB at once and a read
// budget per region), sizes and counts from the disk are checked before
// use, and a malformed structure yields "nothing found" (a nil Content),
// never a panic or a huge allocation. Errors are returned only for I/O
// errors of the underlying reader.
//
// All exported types are plain data with stable snake_case JSON names, as
// printed by `qmount list --json`. Probe and Detect are safe for concurrent
// use if the io.ReaderAt is.
package probe
