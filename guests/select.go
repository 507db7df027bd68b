package guests

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
)

// Catalogue is what selection chooses from: the guest definitions and the
// guests built from them.
type Catalogue struct {
	Defs []*Def
	// Built holds the built guests, by Key(name, arch).
	Built map[string]*Built
	// Problems are built guests that could not be read (broken manifest,
	// missing files), for `qmount guests` to show.
	Problems []error
}

// Key is the Catalogue.Built key of a guest for an architecture.
func Key(name, arch string) string { return name + "/" + arch }

// LoadCatalogue reads the shipped definitions, those in defDirs (and in
// $QMOUNT_GUEST_DEFS), and finds each guest's builds in Roots().
func LoadCatalogue(defDirs ...string) (*Catalogue, error) {
	defs, err := LoadDefs(append(DefDirs(), defDirs...)...)
	if err != nil {
		return nil, err
	}
	c := &Catalogue{Defs: defs, Built: map[string]*Built{}}
	for _, d := range defs {
		for _, arch := range d.Arches() {
			b, err := Find(d.Name, arch)
			switch {
			case errors.Is(err, ErrNotBuilt):
			case err != nil:
				c.Problems = append(c.Problems, err)
			default:
				c.Built[Key(d.Name, arch)] = b
			}
		}
	}
	return c, nil
}

// Def returns the definition named name, or nil.
func (c *Catalogue) Def(name string) *Def {
	for _, d := range c.Defs {
		if d.Name == name {
			return d
		}
	}
	return nil
}

// built returns the built guest name for arch and the definition it was
// built from (the catalogue's when the build recorded none), or nil.
func (c *Catalogue) built(name, arch string) (*Built, *Def) {
	b := c.Built[Key(name, arch)]
	if b == nil {
		return nil, nil
	}
	if b.Def != nil {
		return b, b.Def
	}
	return b, c.Def(name)
}

// SelectOptions are the user's wishes.
type SelectOptions struct {
	// ExplicitType is the mount type the user asked for (-t), e.g. "ntfs3".
	ExplicitType string
	// Guest is the guest the user asked for (--guest).
	Guest string
	// Arch is the guest architecture; "" means the host's.
	Arch string
	// ReadWrite prefers drivers that can write.
	ReadWrite bool
	// Containers are the storage containers probe found on the disks
	// ("crypto_LUKS", "BitLocker", "LVM2_member", "linux_raid_member"):
	// they need the Storage guest's tools.
	Containers []string
	// Disks is how many disks the mount uses; more than one needs the
	// Storage guest (md, LVM or a multi-device btrfs).
	Disks int
	// Unprobed says the host could not look inside the disk (a qcow2,
	// vmdk... image): the Storage guest, which can open anything, finds
	// out.
	Unprobed bool
}

// Storage is the guest with the storage-stack tools (cryptsetup, lvm2,
// mdadm, btrfs-progs, ntfs-3g, busybox).
const Storage = "linux-storage"

// StorageReason says why opts and fstype need the Storage guest, or ""
// when they do not. NTFS is not among them: it only prefers that guest
// (see Select).
func StorageReason(fstype string, opts SelectOptions) string {
	switch {
	case len(opts.Containers) > 0:
		return containerName(opts.Containers[0])
	case opts.Disks > 1:
		return fmt.Sprintf("a filesystem over %d disks", opts.Disks)
	case opts.Unprobed:
		return "a disk image the host cannot look into"
	}
	return ""
}

func containerName(t string) string {
	switch t {
	case "crypto_LUKS":
		return "a LUKS container"
	case "BitLocker":
		return "a BitLocker volume"
	case "LVM2_member":
		return "an LVM volume group"
	case "linux_raid_member":
		return "a Linux RAID array"
	}
	return t
}

// Choice is the guest to boot and how it mounts.
type Choice struct {
	Def   *Def   // the guest's definition (as built, when recorded)
	Built *Built // the built guest to boot
	// FSType is the mount type to ask the guest for; "" lets the guest
	// detect it.
	FSType string
	// Driver is the chosen driver (zero when FSType is "").
	Driver Driver
	// Reason says why, for logs and `qmount guests`.
	Reason string
}

// NotBuiltError says that guests that would serve the request exist but
// none is built. It matches ErrNotBuilt.
type NotBuiltError struct {
	What   string // what was asked for, e.g. "ntfs (-t ntfs3)"
	Arch   string // the guest architecture
	Guests []*Def // guests that would serve it, best first
	// Lacks: Guests[0] is built, without the optional driver (its tools
	// were missing on the build host).
	Lacks bool
}

func (e *NotBuiltError) Error() string {
	var b strings.Builder
	if e.Lacks {
		fmt.Fprintf(&b, "no built guest serves %s for %s; guest %s was built without the driver (install its tools on the build host), rebuild it: %s",
			e.What, e.Arch, e.Guests[0].Name, BuildHint(e.Guests[0], e.Arch))
	} else {
		fmt.Fprintf(&b, "no built guest serves %s for %s; build one: %s", e.What, e.Arch, BuildHint(e.Guests[0], e.Arch))
	}
	if len(e.Guests) > 1 {
		var names []string
		for _, d := range e.Guests[1:] {
			names = append(names, d.Name)
		}
		fmt.Fprintf(&b, " (also serving it: %s)", strings.Join(names, ", "))
	}
	return b.String()
}

func (e *NotBuiltError) Unwrap() error { return ErrNotBuilt }

// BuildHint is the command that builds guest d for arch.
func BuildHint(d *Def, arch string) string {
	s := "make guest GUEST=" + d.Name
	if arch != HostArch() {
		s += " ARCH=" + arch
	}
	if !d.Shipped && d.Dir != "" {
		s = fmt.Sprintf("go run ./cmd/qmount-build guest --defs %s --name %s --arch %s --out build/guests/%s/%s",
			filepath.Dir(d.Dir), d.Name, arch, d.Name, arch)
	}
	if k, ok := d.Kernel[arch]; ok && k.Compiled() {
		s += " (compiles a kernel: about 20 minutes)"
	}
	return s
}

// candidate is a guest and the driver it would mount with.
type candidate struct {
	def      *Def // the catalogue's definition (ranks by its BootMS)
	built    *Built
	builtDef *Def // the definition as built
	driver   Driver
	tier     int // lower is preferred: 0 the filesystem's default driver
}

// Select picks the guest to boot for a filesystem of type fstype (as
// probe names it; "" when unknown) and the user's options.
//
//   - With opts.Guest, that guest, which must be built; its driver for
//     -t, or its preferred driver for fstype (a -t type its definition does
//     not list is passed through: the user asked for both).
//   - With -t, the guests with a driver of that type.
//   - With only fstype, the filesystem's default driver: the default
//     guest's (linux) first driver for it; when no built guest has that
//     driver, another driver of the filesystem. A filesystem the default
//     guest does not serve: any guest's first driver for it.
//   - With neither, the default guest, which detects the type itself.
//
// Among the built guests that qualify, the fastest to boot wins (BootMS),
// then the default guest, then the name. When none is built the error is
// a *NotBuiltError naming the guest to build.
func Select(fstype string, opts SelectOptions, cat *Catalogue) (*Choice, error) {
	arch := opts.Arch
	if arch == "" {
		arch = HostArch()
	}
	if opts.Guest != "" {
		return selectGuest(fstype, opts, arch, cat)
	}
	if why := StorageReason(fstype, opts); why != "" {
		return selectStorage(fstype, opts, arch, cat, why)
	}
	if fstype == "ntfs" && opts.ExplicitType == "" {
		// ntfs-3g in the Storage guest when it is built (the default
		// guest may lack the tool); else the usual choice below.
		if ch, err := selectStorage(fstype, opts, arch, cat, "ntfs"); err == nil && ch.Driver.Type != "" {
			return ch, nil
		}
	}
	what := fstype
	var cands []candidate
	switch {
	case opts.ExplicitType != "":
		what = fmt.Sprintf("-t %s", opts.ExplicitType)
		if fstype != "" {
			what = fmt.Sprintf("%s (-t %s)", fstype, opts.ExplicitType)
		}
		for _, d := range cat.Defs {
			if !d.Supports(arch) {
				continue
			}
			dr, ok := d.Driver(fstype, opts.ExplicitType)
			if !ok {
				dr, ok = d.Driver("", opts.ExplicitType)
			}
			if ok {
				tier := 0
				if opts.ReadWrite && dr.ReadOnly {
					tier = 2
				}
				cands = append(cands, cat.candidate(d, arch, fstype, dr, tier))
			}
		}
		if len(cands) == 0 {
			return nil, fmt.Errorf("no guest has a driver of type %s (types: %s); use --guest NAME to try it in a guest anyway",
				opts.ExplicitType, strings.Join(cat.driverTypes(), ", "))
		}
	case fstype != "":
		defType := ""
		if def := cat.Def(Default); def != nil {
			if ds := def.Filesystems[fstype]; len(ds) > 0 {
				defType = preferred(ds, opts.ReadWrite).Type
			}
		}
		for _, d := range cat.Defs {
			if !d.Supports(arch) {
				continue
			}
			for i, dr := range d.Filesystems[fstype] {
				tier := 1
				if dr.Type == defType || (defType == "" && i == 0) {
					tier = 0
				}
				if opts.ReadWrite && dr.ReadOnly {
					tier += 2
				}
				cands = append(cands, cat.candidate(d, arch, fstype, dr, tier))
			}
		}
		if len(cands) == 0 {
			return nil, fmt.Errorf("no guest serves %s (served: %s); pass -t TYPE with --guest NAME to try anyway",
				fstype, strings.Join(cat.fsTypes(), ", "))
		}
	default:
		d := cat.Def(Default)
		if d == nil || !d.Supports(arch) {
			return nil, fmt.Errorf("no default guest %q for %s", Default, arch)
		}
		b, bd := cat.built(d.Name, arch)
		if b == nil {
			return nil, &NotBuiltError{What: "an undetected filesystem", Arch: arch, Guests: []*Def{d}}
		}
		return &Choice{Def: bd, Built: b, Reason: "filesystem type unknown: the default guest detects it"}, nil
	}

	slices.SortStableFunc(cands, func(a, b candidate) int { return compare(a, b, arch) })
	for _, c := range cands {
		if c.built == nil {
			continue
		}
		reason := fmt.Sprintf("%s driver for %s", c.driver.Type, what)
		if ms := c.def.BootMS[arch]; ms > 0 {
			reason += fmt.Sprintf(", boots in ~%d ms", ms)
		}
		return &Choice{Def: c.builtDef, Built: c.built, FSType: c.driver.Type, Driver: c.driver, Reason: reason}, nil
	}
	// Nothing built: suggest the best of the preferred tier.
	var defs []*Def
	for _, c := range cands {
		if c.tier == cands[0].tier && !slices.Contains(defs, c.def) {
			defs = append(defs, c.def)
		}
	}
	slices.SortStableFunc(defs, func(a, b *Def) int {
		// Building is cheaper than compiling: suggest packaged kernels first.
		return cmpBool(a.Kernel[arch].Compiled(), b.Kernel[arch].Compiled())
	})
	e := &NotBuiltError{What: what, Arch: arch, Guests: defs}
	if b, _ := cat.built(defs[0].Name, arch); b != nil {
		e.Lacks = true
	}
	return nil, e
}

// candidate describes d with driver dr, as built for arch when the build
// has the driver.
func (c *Catalogue) candidate(d *Def, arch, fstype string, dr Driver, tier int) candidate {
	cand := candidate{def: d, driver: dr, tier: tier}
	b, bd := c.built(d.Name, arch)
	if b == nil || bd == nil {
		return cand
	}
	// The build may lack an optional driver (its tool was not installed).
	got, ok := bd.Driver(fstype, dr.Type)
	if !ok {
		got, ok = bd.Driver("", dr.Type)
	}
	if ok {
		cand.built, cand.builtDef, cand.driver = b, bd, got
	}
	return cand
}

func compare(a, b candidate, arch string) int {
	if a.tier != b.tier {
		return a.tier - b.tier
	}
	am, bm := a.def.BootMS[arch], b.def.BootMS[arch]
	switch {
	case am > 0 && bm > 0 && am != bm:
		return am - bm
	case am > 0 && bm == 0:
		return -1
	case am == 0 && bm > 0:
		return 1
	}
	if c := cmpBool(a.def.Name != Default, b.def.Name != Default); c != 0 {
		return c
	}
	return strings.Compare(a.def.Name, b.def.Name)
}

// cmpBool orders false before true.
func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

// preferred returns the first driver, or the first that writes when rw.
func preferred(ds Drivers, rw bool) Driver {
	if rw {
		for _, d := range ds {
			if !d.ReadOnly {
				return d
			}
		}
	}
	return ds[0]
}

// selectStorage chooses the Storage guest, which must be built, for why.
// The filesystem type is left to the guest when it sits inside a
// container (only the guest sees it).
func selectStorage(fstype string, opts SelectOptions, arch string, cat *Catalogue, why string) (*Choice, error) {
	d := cat.Def(Storage)
	b, bd := cat.built(Storage, arch)
	if d == nil && bd == nil {
		return nil, fmt.Errorf("%s needs the %s guest, and no definition of it was found", why, Storage)
	}
	if bd == nil {
		bd = d
	}
	if !bd.Supports(arch) {
		return nil, fmt.Errorf("%s needs the %s guest, which has no %s kernel", why, Storage, arch)
	}
	if b == nil {
		return nil, &NotBuiltError{What: why, Arch: arch, Guests: []*Def{bd}}
	}
	ch := &Choice{Def: bd, Built: b, Reason: fmt.Sprintf("%s: the %s guest has the tools", why, Storage)}
	switch {
	case opts.ExplicitType != "":
		dr, _ := bd.explicitDriver(fstype, opts.ExplicitType)
		ch.FSType, ch.Driver = dr.Type, dr
	case len(opts.Containers) > 0 || opts.Unprobed || fstype == "":
		// The guest detects what the container holds.
	default:
		ds := bd.Filesystems[fstype]
		if len(ds) == 0 {
			return nil, fmt.Errorf("%s: guest %s does not serve %s (it serves %s)", why, Storage, fstype, strings.Join(bd.FSTypes(), ", "))
		}
		dr := preferred(ds, opts.ReadWrite)
		ch.FSType, ch.Driver = dr.Type, dr
		ch.Reason = fmt.Sprintf("%s driver for %s in the %s guest", dr.Type, fstype, Storage)
		if why != fstype {
			ch.Reason = why + ": " + ch.Reason
		}
	}
	return ch, nil
}

// explicitDriver is the driver of d for -t typ on a filesystem probed as
// fstype (or of any filesystem); a type d does not list gets a plain
// driver of that name (ok false).
func (d *Def) explicitDriver(fstype, typ string) (Driver, bool) {
	if dr, ok := d.Driver(fstype, typ); ok {
		return dr, true
	}
	if dr, ok := d.Driver("", typ); ok {
		return dr, true
	}
	return Driver{Type: typ}, false
}

func selectGuest(fstype string, opts SelectOptions, arch string, cat *Catalogue) (*Choice, error) {
	d := cat.Def(opts.Guest)
	b, bd := cat.built(opts.Guest, arch)
	if d == nil && bd == nil {
		var names []string
		for _, d := range cat.Defs {
			names = append(names, d.Name)
		}
		return nil, fmt.Errorf("unknown guest %q (known: %s)", opts.Guest, strings.Join(names, ", "))
	}
	if bd == nil {
		bd = d
	}
	if !bd.Supports(arch) {
		return nil, fmt.Errorf("guest %s has no %s kernel (it supports %s)", bd.Name, arch, strings.Join(bd.Arches(), ", "))
	}
	if b == nil {
		return nil, &NotBuiltError{What: "--guest " + bd.Name, Arch: arch, Guests: []*Def{bd}}
	}
	ch := &Choice{Def: bd, Built: b}
	switch {
	case opts.ExplicitType != "":
		dr, ok := bd.explicitDriver(fstype, opts.ExplicitType)
		if !ok {
			ch.Reason = fmt.Sprintf("--guest %s -t %s (a type its definition does not list)", bd.Name, opts.ExplicitType)
		} else {
			ch.Reason = fmt.Sprintf("--guest %s -t %s", bd.Name, opts.ExplicitType)
		}
		ch.FSType, ch.Driver = dr.Type, dr
	case fstype != "":
		ds := bd.Filesystems[fstype]
		if len(ds) == 0 {
			return nil, fmt.Errorf("guest %s does not serve %s (it serves %s); pass -t TYPE to try anyway",
				bd.Name, fstype, strings.Join(bd.FSTypes(), ", "))
		}
		dr := preferred(ds, opts.ReadWrite)
		ch.FSType, ch.Driver = dr.Type, dr
		ch.Reason = fmt.Sprintf("--guest %s: its %s driver for %s", bd.Name, dr.Type, fstype)
	default:
		ch.Reason = fmt.Sprintf("--guest %s: it detects the filesystem type", bd.Name)
	}
	return ch, nil
}

func (c *Catalogue) driverTypes() []string {
	var out []string
	for _, d := range c.Defs {
		out = append(out, d.DriverTypes()...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func (c *Catalogue) fsTypes() []string {
	var out []string
	for _, d := range c.Defs {
		out = append(out, d.FSTypes()...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// builtDefName is the copy of the definition a build writes next to its
// manifest, with only the drivers the build has.
const builtDefName = DefFile

// readBuiltDef reads the definition recorded in a built guest's dir; nil
// when the build recorded none.
func readBuiltDef(fsys fs.FS) (*Def, error) {
	b, err := fs.ReadFile(fsys, builtDefName)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return ParseDef(b)
}
