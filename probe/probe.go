package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
)

// Usage values of Content.Usage; the same words blkid prints as USAGE.
const (
	UsageFilesystem = "filesystem"
	UsageCrypto     = "crypto"
	UsageRAID       = "raid" // also LVM physical volumes, as blkid has it
	UsageOther      = "other"
)

// Result is what Probe found on a whole device or image.
type Result struct {
	// Size of the probed device in bytes.
	Size int64 `json:"size"`
	// SectorSize is the logical sector size used for the partition table.
	SectorSize int `json:"sector_size"`
	// Table is the partition table, or nil when there is none.
	Table *Table `json:"table,omitempty"`
	// Content is what the whole device holds when read from offset 0 (a
	// filesystem or container without partitions, or an ISO 9660 image that
	// also carries a hybrid partition table). Nil when nothing is recognised.
	Content *Content `json:"content,omitempty"`
	// Partitions lists the partitions of Table in table order (primary MBR
	// partitions, then logical ones), each with what it holds.
	Partitions []Partition `json:"partitions,omitempty"`
}

// Table describes a partition table.
type Table struct {
	// Type is "gpt" or "dos" (MBR), as blkid's PTTYPE.
	Type string `json:"type"`
	// UUID is the GPT disk GUID or the MBR disk signature as 8 hex digits
	// (blkid's PTUUID).
	UUID string `json:"uuid,omitempty"`
	// MBR describes the MBR in front of a GPT: "protective" (only the 0xEE
	// entry) or "hybrid" (0xEE plus other primary entries).
	MBR string `json:"mbr,omitempty"`
	// FirstLBA and LastLBA are the usable sector range of a GPT.
	FirstLBA uint64 `json:"first_lba,omitempty"`
	LastLBA  uint64 `json:"last_lba,omitempty"`
	// Backup is set when the primary GPT was unusable and the backup header
	// at the end of the device was used.
	Backup bool `json:"backup,omitempty"`
}

// Partition is one partition table entry.
type Partition struct {
	// Index is the Linux partition number: GPT slot + 1; MBR primary 1-4,
	// logical partitions from 5 on.
	Index int `json:"index"`
	// Start and Size are in bytes from the start of the device.
	Start int64 `json:"start"`
	Size  int64 `json:"size"`
	// Type is the GPT partition type GUID (lowercase) or the MBR system id
	// as two lowercase hex digits ("83").
	Type string `json:"type"`
	// TypeName is a human name for Type when it is a well-known one.
	TypeName string `json:"type_name,omitempty"`
	// UUID is the GPT partition GUID, or for MBR what blkid reports as
	// PARTUUID ("<disk signature>-<index as 2 hex digits>").
	UUID string `json:"uuid,omitempty"`
	// Name is the GPT partition name.
	Name string `json:"name,omitempty"`
	// Attributes are the GPT attribute bits; for MBR, 0x80 marks the active
	// (bootable) partition.
	Attributes uint64 `json:"attributes,omitempty"`
	// Extended marks an MBR extended partition (a container of logical
	// partitions, not itself holding data).
	Extended bool `json:"extended,omitempty"`
	// Logical marks an MBR logical partition.
	Logical bool `json:"logical,omitempty"`
	// Content is what the partition holds; nil when unrecognised.
	Content *Content `json:"content,omitempty"`
}

// Content identifies what lives in a region: a filesystem, a container
// (LUKS, BitLocker, LVM PV, md member, ZFS member) or swap.
type Content struct {
	// Usage is "filesystem", "crypto", "raid" or "other".
	Usage string `json:"usage"`
	// Type is the name blkid uses as TYPE: ext4, xfs, vfat, crypto_LUKS,
	// LVM2_member, linux_raid_member, zfs_member, swap, BitLocker, ...
	Type string `json:"type"`
	// Version is the format version as blkid prints it (e.g. "FAT32",
	// "1.0" for ext, "2" for LUKS2, "1.2" for md metadata).
	Version string `json:"version,omitempty"`
	// Label is the volume label (LUKS2 label, md array name, ZFS pool name).
	Label string `json:"label,omitempty"`
	// UUID formatted exactly as blkid prints it.
	UUID string `json:"uuid,omitempty"`
	// UUIDSub is blkid's UUID_SUB: a per-device id in a multi-device set
	// (btrfs device UUID, md device UUID, ZFS vdev guid).
	UUIDSub string `json:"uuid_sub,omitempty"`
	// Size is the size in bytes the format says it spans on this device;
	// 0 when unknown.
	Size int64 `json:"size,omitempty"`
	// BlockSize is the block size blkid reports (BLOCK_SIZE); 0 if unknown.
	BlockSize int64 `json:"block_size,omitempty"`
	// Also lists further filesystem types whose signatures were found in the
	// same region (blkid calls such a region ambivalent).
	Also []string `json:"also,omitempty"`

	LUKS      *LUKSInfo      `json:"luks,omitempty"`
	BitLocker *BitLockerInfo `json:"bitlocker,omitempty"`
	LVM       *LVMInfo       `json:"lvm,omitempty"`
	MD        *MDInfo        `json:"md,omitempty"`
	ZFS       *ZFSInfo       `json:"zfs,omitempty"`
	Btrfs     *BtrfsInfo     `json:"btrfs,omitempty"`
	Bcachefs  *BcachefsInfo  `json:"bcachefs,omitempty"`

	// sbOff and sbLen locate the signature inside the region, for the
	// partition-table collision checks (md 0.90 and ZFS labels near the end
	// of a partitioned disk).
	sbOff, sbLen int64
}

// Option configures Probe and Detect.
type Option func(*config)

type config struct {
	log        *slog.Logger
	sectorSize int
	budget     int64
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.log = l
		}
	}
}

// WithSectorSize sets the logical sector size for partition tables (512 or
// 4096). By default 512 is tried first, then 4096 for GPT.
func WithSectorSize(n int) Option {
	return func(c *config) { c.sectorSize = n }
}

// WithReadBudget caps the total bytes read while identifying one region
// (default 32 MiB). Hostile metadata cannot make a probe read more.
func WithReadBudget(n int64) Option {
	return func(c *config) { c.budget = n }
}

func newConfig(opts []Option) config {
	c := config{log: slog.New(slog.DiscardHandler), budget: 32 << 20}
	for _, o := range opts {
		o(&c)
	}
	return c
}

// Probe reads the partition table of a device or image of size bytes and
// identifies what every partition (and the whole device) holds. It only
// reads from r, within [0, size). ctx is checked between partitions.
//
// A device with no recognisable structures gives a Result with neither
// Table nor Content; an error is returned only for I/O errors and a
// cancelled ctx, never for malformed data.
func Probe(ctx context.Context, r io.ReaderAt, size int64, opts ...Option) (*Result, error) {
	if r == nil {
		return nil, errors.New("probe: nil reader")
	}
	if size < 0 {
		return nil, fmt.Errorf("probe: negative size %d", size)
	}
	cfg := newConfig(opts)
	res := &Result{Size: size, SectorSize: 512}

	budget := cfg.budget
	dev := region{r: r, size: size, budget: &budget}
	tab, parts, ssz, err := readPartitions(dev, cfg)
	if err != nil {
		return nil, fmt.Errorf("probe: reading partition table: %w", err)
	}
	res.Table, res.SectorSize = tab, ssz

	whole, err := detect(r, 0, size, cfg)
	if err != nil {
		return nil, fmt.Errorf("probe: identifying whole device: %w", err)
	}
	if whole != nil && tab != nil && coveredSignature(whole, parts) {
		cfg.log.Debug("ignoring whole-device signature inside a partition", "type", whole.Type)
		whole = nil
	}
	res.Content = whole

	for i := range parts {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		p := &parts[i]
		if p.Extended || p.Size <= 0 || p.Start >= size {
			continue
		}
		sz := p.Size
		if sz > size-p.Start {
			sz = size - p.Start
		}
		c, err := detect(r, p.Start, sz, cfg)
		if err != nil {
			return nil, fmt.Errorf("probe: identifying partition %d: %w", p.Index, err)
		}
		p.Content = c
		cfg.log.Debug("partition", "index", p.Index, "start", p.Start, "size", p.Size, "content", contentType(c))
	}
	res.Partitions = parts
	return res, nil
}

// Detect identifies what the region [off, off+size) of r holds. It returns
// nil when nothing is recognised, and an error only for I/O errors other
// than reading past the end of r.
func Detect(r io.ReaderAt, off, size int64, opts ...Option) (*Content, error) {
	if r == nil {
		return nil, errors.New("detect: nil reader")
	}
	if off < 0 || size < 0 {
		return nil, fmt.Errorf("detect: bad region %d+%d", off, size)
	}
	c, err := detect(r, off, size, newConfig(opts))
	if err != nil {
		return nil, fmt.Errorf("detect: %w", err)
	}
	return c, nil
}

func contentType(c *Content) string {
	if c == nil {
		return ""
	}
	return c.Type
}

// coveredSignature reports whether a whole-device md 0.90 or ZFS signature
// lies inside a partition: then it belongs to that partition, not the disk
// (blkid's blkid_probe_is_covered_by_pt).
func coveredSignature(c *Content, parts []Partition) bool {
	if c.Type != "linux_raid_member" && c.Type != "zfs_member" {
		return false
	}
	if c.Type == "linux_raid_member" && c.MD != nil && c.MD.Metadata != "0.90" {
		return false
	}
	for _, p := range parts {
		if p.Extended {
			continue
		}
		if c.sbOff >= p.Start && c.sbOff+c.sbLen <= p.Start+p.Size {
			return true
		}
	}
	return false
}

// prober is one signature check. It returns nil, nil when the region does
// not hold its format.
type prober struct {
	name  string
	usage string
	minSz int64
	// tolerant formats may share a region with another one without making
	// it ambivalent (ISO 9660 and UDF bridges, HFS wrappers), as in blkid.
	tolerant bool
	// noTiny skips the prober on regions of at most 1440 KiB (floppies).
	noTiny bool
	fn     func(g region) (*Content, error)
}

// probers run in blkid's order: RAID and crypto containers first, then
// filesystems. A RAID or crypto match ends the search.
var probers = []prober{
	{name: "linux_raid_member", usage: UsageRAID, noTiny: true, fn: probeMD},
	{name: "LVM2_member", usage: UsageRAID, noTiny: true, fn: probeLVM2},
	{name: "crypto_LUKS", usage: UsageCrypto, fn: probeLUKS},
	{name: "BitLocker", usage: UsageCrypto, fn: probeBitLocker},
	{name: "vfat", usage: UsageFilesystem, fn: probeVFAT},
	{name: "swap", usage: UsageOther, minSz: 10 * 4096, fn: probeSwap},
	{name: "xfs", usage: UsageFilesystem, fn: probeXFS},
	{name: "ext", usage: UsageFilesystem, fn: probeExt},
	{name: "reiserfs", usage: UsageFilesystem, minSz: 128 << 10, fn: probeReiser},
	{name: "jfs", usage: UsageFilesystem, minSz: 16 << 20, fn: probeJFS},
	{name: "udf", usage: UsageFilesystem, tolerant: true, fn: probeUDF},
	{name: "iso9660", usage: UsageFilesystem, tolerant: true, fn: probeISO9660},
	{name: "zfs_member", usage: UsageFilesystem, minSz: 64 << 20, fn: probeZFS},
	{name: "hfsplus", usage: UsageFilesystem, fn: probeHFSPlus},
	{name: "hfs", usage: UsageFilesystem, tolerant: true, fn: probeHFS},
	{name: "ufs", usage: UsageFilesystem, fn: probeUFS},
	{name: "ntfs", usage: UsageFilesystem, fn: probeNTFS},
	{name: "minix", usage: UsageFilesystem, fn: probeMinix},
	{name: "squashfs", usage: UsageFilesystem, fn: probeSquashfs},
	{name: "btrfs", usage: UsageFilesystem, minSz: 1 << 20, fn: probeBtrfs},
	{name: "nilfs2", usage: UsageFilesystem, minSz: 1 << 20, fn: probeNilfs2},
	{name: "exfat", usage: UsageFilesystem, fn: probeExFAT},
	{name: "f2fs", usage: UsageFilesystem, fn: probeF2FS},
	{name: "apfs", usage: UsageFilesystem, fn: probeAPFS},
	{name: "erofs", usage: UsageFilesystem, fn: probeEROFS},
	{name: "bcachefs", usage: UsageFilesystem, minSz: 256 * 512, fn: probeBcachefs},
}

// detect runs the probers over one region.
func detect(r io.ReaderAt, off, size int64, cfg config) (*Content, error) {
	if size <= 1024 {
		return nil, nil
	}
	budget := cfg.budget
	g := region{r: r, off: off, size: size, budget: &budget}
	var first *Content
	for _, p := range probers {
		if p.minSz > 0 && size < p.minSz {
			continue
		}
		if p.noTiny && size <= 1440<<10 {
			continue
		}
		c, err := runProber(p, g)
		if err != nil {
			return nil, err
		}
		if c == nil {
			continue
		}
		if c.Usage == "" {
			c.Usage = p.usage
		}
		if first == nil {
			first = c
			if c.Usage == UsageRAID || c.Usage == UsageCrypto {
				return first, nil
			}
			continue
		}
		if c.Usage == UsageRAID || c.Usage == UsageCrypto {
			continue
		}
		// blkid keeps the first match in its order; the others are noted.
		first.Also = append(first.Also, c.Type)
	}
	return first, nil
}

// runProber runs one prober, turning short reads, an exhausted budget and
// panics (a bug on hostile input) into "not found".
func runProber(p prober, g region) (c *Content, err error) {
	if recoverPanics {
		defer func() {
			if r := recover(); r != nil {
				c, err = nil, nil
			}
		}()
	}
	c, err = p.fn(g)
	if err != nil {
		var re *readError
		if errors.As(err, &re) {
			return nil, err
		}
		return nil, nil
	}
	return c, nil
}

// recoverPanics makes a panicking prober count as "not found". Tests and
// fuzzing turn it off so that such bugs surface.
var recoverPanics = true

// readError wraps an I/O error from the underlying reader that must be
// reported (as opposed to malformed data).
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }
func (e *readError) Unwrap() error { return e.err }
