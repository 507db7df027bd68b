package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/qmount/qmount/guests"
	"github.com/qmount/qmount/internal/source"
	"github.com/qmount/qmount/probe"
)

// Request is what the user asked for on the command line.
type Request struct {
	// Disk is a block device or image path, optionally with "@N" to pick
	// partition N, or a storage identifier: lvm:VG:DISK[:DISK...]:LV,
	// raid:DISK[:DISK...] or DISK:DISK[...] (a multi-device btrfs).
	Disk string
	// Mountpoint may be empty: a directory named after the filesystem's
	// label is created under MountRoot.
	Mountpoint string
	ReadOnly   bool
	Options    string // -o, forwarded to the guest's mount
	FSType     string // -t, overrides the detected type
	Guest      string // guest name (default guests.Default)
	Arch       string // guest architecture (default the host's)
	MemoryMiB  int
	CPUs       int
	Owner      Owner
	// NoDirectRead makes every read go through the guest, even where the
	// host could read file data from the disk itself (see DirectRead).
	NoDirectRead bool
}

// Owner says how file owners appear on the host.
type Owner struct {
	// Mode is OwnerKeep (the disk's own uids and gids) or OwnerMe (files
	// owned by the disk's users appear owned by UID/GID).
	Mode string `json:"mode"`
	UID  int    `json:"uid"`
	GID  int    `json:"gid"`
}

// Owner modes.
const (
	OwnerKeep = "keep"
	OwnerMe   = "me"
)

// Plan is a checked, resolved Request: everything Run needs. It is plain
// data (JSON) so that the mount command can hand it to the supervisor it
// starts.
type Plan struct {
	Disk             string `json:"disk"` // absolute path
	Partition        int    `json:"partition"`
	DetectedType     string `json:"detected_type,omitempty"` // probe's (blkid) name
	FSType           string `json:"fstype,omitempty"`        // sent to the guest; "" lets it detect
	Label            string `json:"label,omitempty"`
	Options          string `json:"options,omitempty"`
	ReadOnly         bool   `json:"read_only"`
	Guest            string `json:"guest"`
	GuestDir         string `json:"guest_dir"` // the built guest to boot
	Arch             string `json:"arch"`
	MemoryMiB        int    `json:"memory_mib"`
	CPUs             int    `json:"cpus"`
	Mountpoint       string `json:"mountpoint"`
	CreateMountpoint bool   `json:"create_mountpoint"`
	AutoMountpoint   bool   `json:"auto_mountpoint,omitempty"`
	Owner            Owner  `json:"owner"`
	NoDirectRead     bool   `json:"no_direct_read,omitempty"`
	StateDir         string `json:"state_dir"`

	partitionContent *probe.Content // what Partition holds, for Prepare

	// Disks are all the disks of the mount, absolute, in order; Disk is
	// Disks[0]. Formats are their image formats (probe.ImageFormat).
	Disks   []string `json:"disks"`
	Formats []string `json:"formats"`
	// Source is the identifier as given, for messages.
	Source string `json:"source"`
	// RAID, VG and LV are the storage stack asked for (raid:, lvm:).
	RAID bool   `json:"raid,omitempty"`
	VG   string `json:"vg,omitempty"`
	LV   string `json:"lv,omitempty"`
	// Encrypted is set when a disk holds an encrypted container: the guest
	// will ask for a passphrase.
	Encrypted bool `json:"encrypted,omitempty"`
	// Notes are lines to show the user (memory raised, read-only forced).
	Notes []string `json:"notes,omitempty"`
}

// Defaults for the guest's size. The guest gets DefaultCPUs CPUs, or
// the host's count if smaller: a second CPU lets the guest's kernel
// (virtio, the file system) and its 9P server work at once; under QEMU
// TCG it read 1.5x and listed 1.6x faster, and booted about 0.15 s
// slower (docs/bench-results.md).
const (
	DefaultMemoryMiB = 512
	DefaultCPUs      = 2
)

// defaultCPUs is DefaultCPUs, at most the host's CPU count.
func defaultCPUs() int { return min(DefaultCPUs, runtime.NumCPU()) }

// Prepare checks req and resolves it into a Plan without starting
// anything: the disk exists, is readable (and writable unless read-only),
// holds something mountable, the guest is built, the hypervisor is
// installed, the options are sane, the mount point can be used and the
// disk is not locked by another mount. Errors are one line a person can
// act on (except the list of partitions to choose from).
func Prepare(ctx context.Context, req Request) (*Plan, error) {
	p := &Plan{
		Guest: req.Guest, Arch: req.Arch, MemoryMiB: req.MemoryMiB, CPUs: req.CPUs,
		ReadOnly: req.ReadOnly, Owner: req.Owner, NoDirectRead: req.NoDirectRead,
	}
	if p.Arch == "" {
		p.Arch = guests.HostArch()
	}
	if p.MemoryMiB == 0 {
		p.MemoryMiB = DefaultMemoryMiB
	}
	if p.CPUs == 0 {
		p.CPUs = defaultCPUs()
	}
	if p.MemoryMiB < 64 || p.MemoryMiB > 1<<20 {
		return nil, fmt.Errorf("--memory %d: give between 64 and %d MiB", p.MemoryMiB, 1<<20)
	}
	if p.CPUs < 1 || p.CPUs > 64 {
		return nil, fmt.Errorf("--cpus %d: give between 1 and 64", p.CPUs)
	}
	switch p.Owner.Mode {
	case "":
		p.Owner.Mode = DefaultOwnerMode
	case OwnerKeep, OwnerMe:
	default:
		return nil, fmt.Errorf("--owner %q: use keep or me", p.Owner.Mode)
	}
	if p.Owner.Mode == OwnerMe && p.Owner.UID < 0 {
		p.Owner.UID = invokingID(os.Getuid(), "SUDO_UID")
	}
	if p.Owner.Mode == OwnerMe && p.Owner.GID < 0 {
		p.Owner.GID = invokingID(os.Getgid(), "SUDO_GID")
	}

	opts, ro, err := ValidateOptions(req.Options)
	if err != nil {
		return nil, err
	}
	p.Options = opts
	p.ReadOnly = p.ReadOnly || ro

	sd, err := StateDir()
	if err != nil {
		return nil, err
	}
	p.StateDir = sd

	// The disks.
	src, err := source.Parse(req.Disk, func(p string) bool { _, err := os.Stat(p); return err == nil })
	if err != nil {
		return nil, err
	}
	p.Source = req.Disk
	sel := guests.SelectOptions{Disks: len(src.Disks)}
	var contents []*probe.Content // whole-disk contents of raw disks (nil: unknown)
	index := -1
	for i, arg := range src.Disks {
		d, err := p.openDisk(ctx, arg, src.Kind == source.Single)
		if err != nil {
			return nil, err
		}
		p.Disks = append(p.Disks, d.path)
		p.Formats = append(p.Formats, d.format)
		p.Disk = p.Disks[0]
		if d.format != "raw" {
			sel.Unprobed = true
		}
		if i == 0 {
			index = d.index
			if d.res != nil && src.Kind == source.Single {
				if err := p.choose(d.res, index, req.FSType != ""); err != nil {
					return nil, err
				}
			} else if d.res == nil {
				p.Partition = max(index, 0)
			}
		}
		var c *probe.Content
		if d.res != nil {
			c = d.res.Content
		}
		contents = append(contents, c)
	}
	p.Disk = p.Disks[0]
	if err := p.stack(src, contents, &sel); err != nil {
		return nil, err
	}

	// The guest (the best built one for the filesystem, or --guest) and
	// the hypervisor.
	if err := ValidateFSType(req.FSType, nil); err != nil && !strings.Contains(err.Error(), "(known") {
		return nil, err // not even a name
	}
	cat, err := guests.LoadCatalogue()
	if err != nil {
		return nil, fmt.Errorf("reading the guest catalogue: %w", err)
	}
	if req.FSType != "" {
		var known []string
		for _, d := range cat.Defs {
			known = append(known, d.DriverTypes()...)
		}
		for _, b := range cat.Built {
			known = append(known, b.Manifest.Initramfs.Modules...)
			known = append(known, b.Manifest.Initramfs.Builtin...)
		}
		if err := ValidateFSType(req.FSType, known); err != nil {
			return nil, err
		}
	}
	sel.ExplicitType, sel.Guest, sel.Arch, sel.ReadWrite = req.FSType, req.Guest, p.Arch, !p.ReadOnly
	ch, err := guests.Select(p.DetectedType, sel, cat)
	if err != nil {
		return nil, err
	}
	p.Guest, p.GuestDir = ch.Built.Name, ch.Built.Dir
	p.FSType = ch.FSType
	if p.FSType == "" {
		p.FSType = req.FSType
	}
	if err := checkHypervisor(p.Arch); err != nil {
		return nil, err
	}

	// The mount point.
	if err := p.chooseMountpoint(req.Mountpoint); err != nil {
		return nil, err
	}

	// The disks must not be mounted in a conflicting way.
	l := Layout{Root: p.StateDir}
	locks, err := l.lockDisks(p)
	if err != nil {
		return nil, err
	}
	for _, lk := range locks {
		lk.release() // the supervisor takes the locks for real
	}
	return p, nil
}

// lockDisks takes the locks of every disk of p (the first with its
// partition), releasing them all on failure.
func (l Layout) lockDisks(p *Plan) ([]*diskLock, error) {
	var locks []*diskLock
	for i, d := range p.Disks {
		part := 0
		if i == 0 {
			part = p.Partition
		}
		lk, err := l.lockDisk(d, part, p.ReadOnly)
		if err != nil {
			for _, lk := range locks {
				lk.release()
			}
			if i > 0 && errors.Is(err, ErrDiskBusy) {
				return nil, fmt.Errorf("%s is busy: another qmount mount uses it (see qmount status)", d)
			}
			return nil, l.busyError(p, err)
		}
		locks = append(locks, lk)
	}
	return locks, nil
}

// openedDisk is one disk of a mount, checked and probed.
type openedDisk struct {
	path   string
	index  int           // the @N partition asked for, or -1
	format string        // probe.ImageFormat
	res    *probe.Result // nil for an image format the host cannot read
}

// openDisk resolves and checks one disk of the mount: it exists, can be
// read (and written, unless read-only: an image file without write
// permission makes the mount read-only, saying so), and has an image
// format QEMU reads; raw disks are probed. @N is only allowed when
// partitions is set (a single-disk mount).
func (p *Plan) openDisk(ctx context.Context, arg string, partitions bool) (*openedDisk, error) {
	disk, index, fi, err := resolveDisk(arg)
	if err != nil {
		return nil, err
	}
	if index >= 0 && !partitions {
		return nil, fmt.Errorf("%s: a partition of an image cannot be part of an lvm:, raid: or multi-disk identifier; give whole disks or partition devices", arg)
	}
	f, err := os.Open(disk)
	if err != nil {
		return nil, openError(disk, fi, err, false)
	}
	defer f.Close()
	if !p.ReadOnly {
		werr := syscall.Access(disk, 2 /* W_OK */)
		if werr == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o222 == 0 {
			werr = fs.ErrPermission // root may write anything: keep the file's own wish
		}
		if werr != nil {
			if !fi.Mode().IsRegular() || !errors.Is(werr, fs.ErrPermission) {
				return nil, openError(disk, fi, werr, true)
			}
			p.ReadOnly = true
			p.Notes = append(p.Notes, disk+" is not writable: mounting read-only")
		}
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, fmt.Errorf("finding the size of %s: %w", disk, err)
	}
	if size == 0 {
		return nil, fmt.Errorf("%s is empty: no filesystem found", disk)
	}
	d := &openedDisk{path: disk, index: index, format: probe.ImageFormat(f)}
	switch d.format {
	case "raw":
	case "qcow":
		return nil, fmt.Errorf("%s: qcow version 1 images are not supported; convert with qemu-img convert -O qcow2", disk)
	default:
		return d, nil // only the guest sees inside
	}
	if d.res, err = probe.Probe(ctx, f, size); err != nil {
		return nil, fmt.Errorf("reading %s: %w", disk, err)
	}
	return d, nil
}

// containerTypes are what probe names the containers the storage guest
// opens.
var containerTypes = []string{"crypto_LUKS", "BitLocker", "LVM2_member", "linux_raid_member"}

// stack checks the storage stack src asks for against what the disks
// hold (contents: the whole-disk contents of raw disks) and fills in the
// plan and the guest selection's containers.
func (p *Plan) stack(src *source.Source, contents []*probe.Content, sel *guests.SelectOptions) error {
	p.RAID, p.VG, p.LV = src.Kind == source.RAID, src.VG, src.LV
	if src.Kind == source.Single && p.Partition > 0 {
		contents = []*probe.Content{p.partitionContent}
	}
	for i, c := range contents {
		if c == nil || !slices.Contains(containerTypes, c.Type) {
			continue
		}
		if !slices.Contains(sel.Containers, c.Type) {
			sel.Containers = append(sel.Containers, c.Type)
		}
		switch {
		case c.Type == "crypto_LUKS" || c.Type == "BitLocker":
			p.Encrypted = true
			if c.LUKS != nil && strings.HasPrefix(c.LUKS.PBKDF, "argon2") && c.LUKS.PBKDFMemoryKiB > 0 {
				need := int((c.LUKS.PBKDFMemoryKiB+1023)/1024) + DefaultMemoryMiB
				if p.MemoryMiB < need {
					p.Notes = append(p.Notes, fmt.Sprintf("%s: its LUKS2 key slot uses %s with %d MiB of memory: guest memory raised from %d to %d MiB",
						p.Disks[i], c.LUKS.PBKDF, (c.LUKS.PBKDFMemoryKiB+1023)/1024, p.MemoryMiB, need))
					p.MemoryMiB = need
				}
			}
		case c.Type == "LVM2_member" && src.Kind == source.LVM && c.LVM != nil && c.LVM.VGName != "" && c.LVM.VGName != src.VG:
			return fmt.Errorf("%s belongs to volume group %s, not %s", p.Disks[i], c.LVM.VGName, src.VG)
		case c.Type == "LVM2_member" && src.Kind == source.LVM && c.LVM != nil && src.LV != "":
			var names []string
			for _, lv := range c.LVM.LVs {
				if lv.Visible {
					names = append(names, lv.Name)
				}
			}
			if len(names) > 0 && !slices.Contains(names, src.LV) {
				return fmt.Errorf("volume group %s has no logical volume %s (it has: %s)", src.VG, src.LV, strings.Join(names, ", "))
			}
		case c.Type == "linux_raid_member" && c.MD != nil:
			if p.Label == "" {
				p.Label = c.MD.Name
				if _, n, ok := strings.Cut(p.Label, ":"); ok {
					p.Label = n
				}
			}
			if c.MD.RaidDisks > len(p.Disks) && !p.ReadOnly {
				p.ReadOnly = true
				p.Notes = append(p.Notes, fmt.Sprintf("the RAID array has %d of its %d disks: mounting it degraded, read-only", len(p.Disks), c.MD.RaidDisks))
			}
		}
	}
	if len(sel.Containers) > 0 {
		p.DetectedType = "" // what is inside: only the guest sees it
	}
	switch src.Kind {
	case source.LVM:
		if p.Label == "" {
			p.Label = src.LV
		}
		if p.Label == "" {
			p.Label = src.VG
		}
		for i, c := range contents {
			if c != nil && c.Type != "LVM2_member" && c.Type != "crypto_LUKS" && c.Type != "BitLocker" && c.Type != "linux_raid_member" {
				return fmt.Errorf("%s holds %s, not an LVM physical volume", p.Disks[i], c.Type)
			}
		}
	case source.RAID:
		for i, c := range contents {
			if c != nil && c.Type != "linux_raid_member" && c.Type != "crypto_LUKS" && c.Type != "BitLocker" {
				return fmt.Errorf("%s holds %s, not a Linux RAID member", p.Disks[i], c.Type)
			}
		}
	case source.Multi:
		for i, c := range contents {
			if c == nil {
				continue
			}
			if c.Usage != "filesystem" {
				return fmt.Errorf("%s holds %s, not a filesystem", p.Disks[i], c.Type)
			}
			if p.DetectedType == "" {
				p.DetectedType, p.Label = c.Type, c.Label
			} else if c.Type != p.DetectedType {
				return fmt.Errorf("%s holds %s, %s holds %s: not one filesystem", p.Disks[0], p.DetectedType, p.Disks[i], c.Type)
			}
		}
	}
	return nil
}

// DefaultOwnerMode is the platform's default for --owner.
var DefaultOwnerMode = func() string {
	if runtime.GOOS == "darwin" {
		return OwnerMe
	}
	return OwnerKeep
}()

// resolveDisk finds the disk of arg, which may end in "@N".
func resolveDisk(arg string) (path string, index int, fi os.FileInfo, err error) {
	if arg == "" {
		return "", 0, nil, errors.New("no disk given")
	}
	index = -1
	path = arg
	fi, err = os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		if p, n := probe.SplitIndex(arg); n >= 0 {
			if fi2, err2 := os.Stat(p); err2 == nil || !errors.Is(err2, fs.ErrNotExist) {
				path, index, fi, err = p, n, fi2, err2
			}
		}
	}
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", 0, nil, fmt.Errorf("%s: no such file or device", arg)
		}
		if errors.Is(err, fs.ErrPermission) {
			return "", 0, nil, fmt.Errorf("no permission to reach %s: run with sudo", arg)
		}
		return "", 0, nil, fmt.Errorf("%s: %w", arg, err)
	}
	if fi.IsDir() {
		return "", 0, nil, fmt.Errorf("%s is a directory, not a disk or an image (to serve a directory use qmount loopback)", path)
	}
	if !fi.Mode().IsRegular() && fi.Mode()&fs.ModeDevice == 0 {
		return "", 0, nil, fmt.Errorf("%s is not a disk or an image file", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", 0, nil, err
	}
	return abs, index, fi, nil
}

func openError(disk string, fi os.FileInfo, err error, write bool) error {
	if !errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("opening %s: %w", disk, err)
	}
	what := "read"
	if write {
		what = "write"
	}
	hint := "run with sudo"
	if fi != nil && fi.Mode()&fs.ModeDevice != 0 {
		hint = "run with sudo or add yourself to the disk group"
	}
	if write {
		hint = "mount it read-only with --ro, or " + hint
	}
	return fmt.Errorf("no permission to %s %s: %s", what, disk, hint)
}

// choose picks the partition (or whole disk) to mount.
func (p *Plan) choose(res *probe.Result, index int, forcedType bool) error {
	// An LVM physical volume or a RAID member (whole disk, or the
	// partition asked for) is a container the storage guest opens.
	if c := containerAt(res, index); c != nil {
		p.Partition = max(index, 0)
		p.partitionContent = c
		return nil
	}
	ms := res.Mountables()
	if len(ms) == 0 && forcedType {
		// The user knows the type better than our probe.
		p.Partition = max(index, 0)
		return nil
	}
	if len(ms) == 0 {
		switch {
		case res.Content != nil && res.Table == nil:
			return fmt.Errorf("%s holds %s, which qmount cannot mount", p.Disk, res.Content.Type)
		case res.Table != nil:
			return fmt.Errorf("no filesystem found in the partitions of %s", p.Disk)
		}
		return fmt.Errorf("no filesystem found on %s", p.Disk)
	}
	m, err := res.Select(index)
	if err != nil {
		return fmt.Errorf("%s: %w", p.Disk, err)
	}
	p.Partition = m.Index
	p.partitionContent = contentAt(res, m.Index)
	p.DetectedType = m.Type
	p.Label = m.Label
	return nil
}

// contentAt is what partition index (0: the whole disk) holds.
func contentAt(res *probe.Result, index int) *probe.Content {
	if index <= 0 {
		return res.Content
	}
	for i := range res.Partitions {
		if res.Partitions[i].Index == index {
			return res.Partitions[i].Content
		}
	}
	return nil
}

// containerAt returns the LVM physical volume or RAID member at index
// (-1: the whole disk, when it has no partition table), or nil.
func containerAt(res *probe.Result, index int) *probe.Content {
	if index < 0 && res.Table != nil {
		return nil
	}
	c := contentAt(res, index)
	if c != nil && (c.Type == "LVM2_member" || c.Type == "linux_raid_member") {
		return c
	}
	return nil
}

// chooseMountpoint checks the given mount point or picks one.
func (p *Plan) chooseMountpoint(mp string) error {
	if mp != "" {
		abs, err := filepath.Abs(mp)
		if err != nil {
			return err
		}
		p.Mountpoint = abs
		fi, err := os.Stat(abs)
		switch {
		case err == nil && !fi.IsDir():
			return fmt.Errorf("mount point %s is not a directory", abs)
		case err == nil:
			return nil
		case errors.Is(err, fs.ErrNotExist):
			pfi, perr := os.Stat(filepath.Dir(abs))
			if perr != nil || !pfi.IsDir() {
				return fmt.Errorf("mount point %s: its parent directory does not exist", abs)
			}
			p.CreateMountpoint = true
			return nil
		case errors.Is(err, syscall.ENOTCONN):
			return fmt.Errorf("mount point %s is a stale mount: run qmount stop %s", abs, abs)
		default:
			return fmt.Errorf("mount point %s: %w", abs, err)
		}
	}
	root, err := MountRoot()
	if err != nil {
		return err
	}
	ours, _ := Layout{Root: p.StateDir}.List()
	name := uniqueName(MountName(p.Label, p.Disk), func(n string) bool {
		path := filepath.Join(root, n)
		if _, err := os.Lstat(path); err == nil || !errors.Is(err, fs.ErrNotExist) {
			return true
		}
		for _, st := range ours {
			if st.Mountpoint == path {
				return true
			}
		}
		return false
	})
	p.Mountpoint = filepath.Join(root, name)
	p.CreateMountpoint = true
	p.AutoMountpoint = true
	return nil
}

// busyError explains a lock conflict, naming the mount that holds it.
func (l Layout) busyError(p *Plan, err error) error {
	if !errors.Is(err, ErrDiskBusy) {
		return err
	}
	key, _ := lockKey(p.Disk, p.Partition)
	all, _ := l.List()
	for _, st := range all {
		if st.LockKey == key {
			how := "read-write"
			if st.ReadOnly {
				how = "read-only"
			}
			return fmt.Errorf("%s is already mounted %s at %s: unmount it first (qmount unmount %s)", diskName(p), how, st.Mountpoint, quoteArg(st.Mountpoint))
		}
	}
	return fmt.Errorf("%s is busy: another qmount mount uses it (see qmount status)", diskName(p))
}

func diskName(p *Plan) string {
	if p.Partition > 0 {
		return fmt.Sprintf("%s@%d", p.Disk, p.Partition)
	}
	return p.Disk
}

func quoteArg(s string) string {
	if strings.ContainsAny(s, " \t'\"\\$`") {
		return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
	}
	return s
}

// invokingID is the id of the user who ran qmount: under sudo, the user
// who ran sudo ($SUDO_UID, $SUDO_GID), else the process' own.
func invokingID(own int, env string) int {
	if own == 0 {
		if n, err := strconv.Atoi(os.Getenv(env)); err == nil && n > 0 {
			return n
		}
	}
	return own
}
