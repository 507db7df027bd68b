package guests

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// DefFile is the name of a guest definition inside its directory
// (guests/NAME/guest.json).
const DefFile = "guest.json"

// EnvDefs names the environment variable with extra definition
// directories (colon-separated), each holding NAME/guest.json.
const EnvDefs = "QMOUNT_GUEST_DEFS"

// Def is a guest definition: what a guest is built from and what it
// serves. It is read from guests/NAME/guest.json; docs/guests.md describes
// the format.
type Def struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Kernel says, per architecture (GOARCH), where the kernel comes from.
	// Its keys are the architectures the guest supports.
	Kernel map[string]KernelSource `json:"kernel"`
	// Filesystems maps a filesystem type as probe names it ("ext4",
	// "ntfs", "vfat"...) to the drivers that serve it, preferred first.
	Filesystems map[string]Drivers `json:"filesystems"`
	// Modules must be shipped (or built into the kernel); OptionalModules
	// are shipped when the kernel has them. The drivers' modules are
	// required too.
	Modules         []string `json:"modules,omitempty"`
	OptionalModules []string `json:"optional_modules,omitempty"`
	// BootModules are loaded by the guest at start (virtio transports,
	// block and console devices, vsock).
	BootModules []string `json:"boot_modules,omitempty"`
	// Tools are programs shipped with their shared libraries (absolute
	// paths in the tool root, e.g. /usr/sbin/cryptsetup).
	Tools []string `json:"tools,omitempty"`
	// BootMS is the measured boot time per architecture, in milliseconds
	// (QEMU start to the guest's hello under TCG). Selection prefers the
	// fastest; a guest without a figure ranks after those with one.
	BootMS map[string]int `json:"boot_ms,omitempty"`

	// Dir is the directory the definition was read from ("guests/NAME"
	// for the shipped ones); relative kernel config paths resolve against
	// it first. Shipped reports a definition embedded in the binary.
	Dir     string `json:"-"`
	Shipped bool   `json:"-"`
}

// KernelSource is where a guest's kernel comes from: a Debian kernel
// package, or a kernel built from a Debian linux-source package with a
// config fragment. Exactly one of Debian and Config is set.
type KernelSource struct {
	// Debian is a kernel image package or metapackage
	// ("linux-image-amd64", "linux-image-6.12-cloud-amd64").
	Debian string `json:"debian,omitempty"`
	// Config is a kernel config fragment applied on top of tinyconfig
	// ("kernels/configs/mini.config"); Source is the Debian package with
	// the kernel source tarball ("linux-source-6.1").
	Config string `json:"config,omitempty"`
	Source string `json:"source,omitempty"`
}

// Compiled reports whether the kernel is compiled from source (slow).
func (k KernelSource) Compiled() bool { return k.Config != "" }

func (k KernelSource) String() string {
	if k.Compiled() {
		return k.Source + " + " + k.Config
	}
	return k.Debian
}

// Driver is one way to mount a filesystem.
type Driver struct {
	// Type is the mount(2) type ("ext4", "ntfs3") or, for a FUSE driver,
	// the driver's name ("ntfs-3g"). It is what `-t` names. Empty in the
	// file means the filesystem's own name.
	Type string `json:"type"`
	// Modules are loaded before mounting, in order (built-in ones are
	// skipped by the build).
	Modules []string `json:"modules,omitempty"`
	// FUSE marks a userspace driver: the guest runs Tools[0] instead of
	// mount(2), with the fuse module loaded.
	FUSE bool `json:"fuse,omitempty"`
	// Tools are the programs the driver needs (shipped with the guest).
	Tools []string `json:"tools,omitempty"`
	// ReadOnly marks a driver that can only mount read-only.
	ReadOnly bool `json:"read_only,omitempty"`
	// Optional drivers are built into the guest only when their modules
	// and tools are available for the architecture (e.g. a FUSE program
	// installed on the build host); the built guest's definition
	// (Built.Def) keeps only the drivers it has.
	Optional bool `json:"optional,omitempty"`
}

// Drivers is a filesystem's driver list, preferred first. In a file it is
// a list of driver objects, or a single object.
type Drivers []Driver

// UnmarshalJSON accepts one driver object or a list of them.
func (d *Drivers) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '{' {
		var one Driver
		if err := strictUnmarshal(b, &one); err != nil {
			return err
		}
		*d = Drivers{one}
		return nil
	}
	var list []Driver
	if err := strictUnmarshal(b, &list); err != nil {
		return err
	}
	*d = list
	return nil
}

func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// Arches returns the architectures the guest supports, sorted.
func (d *Def) Arches() []string { return slices.Sorted(maps.Keys(d.Kernel)) }

// Supports reports whether the guest has a kernel for arch.
func (d *Def) Supports(arch string) bool {
	_, ok := d.Kernel[arch]
	return ok
}

// FSTypes returns the filesystems the guest serves, sorted.
func (d *Def) FSTypes() []string { return slices.Sorted(maps.Keys(d.Filesystems)) }

// DriverTypes returns every driver type (what -t accepts), sorted.
func (d *Def) DriverTypes() []string {
	var out []string
	for _, ds := range d.Filesystems {
		for _, dr := range ds {
			out = append(out, dr.Type)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Driver returns the driver of type typ for filesystem fs; fs "" matches
// any filesystem.
func (d *Def) Driver(fs, typ string) (Driver, bool) {
	for _, f := range d.FSTypes() {
		if fs != "" && f != fs {
			continue
		}
		for _, dr := range d.Filesystems[f] {
			if dr.Type == typ {
				return dr, true
			}
		}
	}
	return Driver{}, false
}

// AllModules returns Modules, then every driver's modules, without
// duplicates (a build leaves out optional drivers it cannot serve).
func (d *Def) AllModules() []string {
	out := slices.Clone(d.Modules)
	for _, fs := range d.FSTypes() {
		for _, dr := range d.Filesystems[fs] {
			for _, m := range dr.Modules {
				if !slices.Contains(out, m) {
					out = append(out, m)
				}
			}
		}
	}
	return out
}

// AllTools returns Tools and the drivers' tools, without duplicates.
func (d *Def) AllTools() []string {
	out := slices.Clone(d.Tools)
	for _, fs := range d.FSTypes() {
		for _, dr := range d.Filesystems[fs] {
			for _, t := range dr.Tools {
				if !slices.Contains(out, t) {
					out = append(out, t)
				}
			}
		}
	}
	return out
}

// FSModules returns, per driver type, the modules to load before mounting
// with it (what the guest agent reads as fs_modules). FUSE drivers load
// fuse first.
func (d *Def) FSModules() map[string][]string {
	out := map[string][]string{}
	for _, fs := range d.FSTypes() {
		for _, dr := range d.Filesystems[fs] {
			if _, ok := out[dr.Type]; ok {
				continue
			}
			mods := slices.Clone(dr.Modules)
			if dr.FUSE && !slices.Contains(mods, "fuse") {
				mods = append([]string{"fuse"}, mods...)
			}
			out[dr.Type] = mods
		}
	}
	return out
}

var (
	nameRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	typeRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,31}$`)
	moduleRE  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	pkgRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)
	knownArch = []string{"amd64", "arm64"}
)

// ParseDef decodes and validates a definition. Unknown fields are errors,
// so that a misspelt key does not silently change a guest.
func ParseDef(b []byte) (*Def, error) {
	var d Def
	if err := strictUnmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("decoding guest definition: %w", err)
	}
	for fs, ds := range d.Filesystems {
		for i := range ds {
			if ds[i].Type == "" {
				ds[i].Type = fs
			}
		}
	}
	if err := d.validate(); err != nil {
		if d.Name != "" {
			return nil, fmt.Errorf("guest %s: %w", d.Name, err)
		}
		return nil, err
	}
	return &d, nil
}

func (d *Def) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !nameRE.MatchString(d.Name) {
		bad("name %q: want lowercase letters, digits, '.', '_', '-' (at most 64)", d.Name)
	}
	if len(d.Kernel) == 0 {
		bad("no kernel: want \"kernel\": {\"amd64\": {\"debian\": \"linux-image-amd64\"}, ...}")
	}
	for _, arch := range d.Arches() {
		k := d.Kernel[arch]
		switch {
		case !slices.Contains(knownArch, arch):
			bad("kernel: unknown architecture %q (known: %s)", arch, strings.Join(knownArch, ", "))
		case k.Debian != "" && (k.Config != "" || k.Source != ""):
			bad("kernel %s: set either debian or config+source, not both", arch)
		case k.Debian != "" && !pkgRE.MatchString(k.Debian):
			bad("kernel %s: bad package name %q", arch, k.Debian)
		case k.Debian == "" && (k.Config == "" || k.Source == ""):
			bad("kernel %s: want a Debian package (\"debian\") or a config fragment with its source package (\"config\" and \"source\")", arch)
		case k.Source != "" && !pkgRE.MatchString(k.Source):
			bad("kernel %s: bad source package name %q", arch, k.Source)
		}
	}
	if len(d.Filesystems) == 0 {
		bad("serves no filesystems")
	}
	for _, fs := range d.FSTypes() {
		ds := d.Filesystems[fs]
		if !typeRE.MatchString(fs) {
			bad("filesystem %q: bad name", fs)
		}
		if len(ds) == 0 {
			bad("filesystem %s: no driver", fs)
		}
		seen := map[string]bool{}
		for _, dr := range ds {
			if !typeRE.MatchString(dr.Type) {
				bad("filesystem %s: bad driver type %q", fs, dr.Type)
			}
			if seen[dr.Type] {
				bad("filesystem %s: driver %s twice", fs, dr.Type)
			}
			seen[dr.Type] = true
			if dr.FUSE && len(dr.Tools) == 0 {
				bad("filesystem %s: FUSE driver %s names no tool (its program)", fs, dr.Type)
			}
		}
	}
	// A driver type means one thing in a guest: the same modules and kind
	// wherever it is listed.
	byType := map[string]Driver{}
	for _, fs := range d.FSTypes() {
		for _, dr := range d.Filesystems[fs] {
			if old, ok := byType[dr.Type]; ok && (!slices.Equal(old.Modules, dr.Modules) || old.FUSE != dr.FUSE) {
				bad("driver %s is listed with different modules or kinds", dr.Type)
			}
			byType[dr.Type] = dr
		}
	}
	for _, m := range slices.Concat(d.Modules, d.OptionalModules, d.BootModules, slices.Concat(driverModules(d)...)) {
		if !moduleRE.MatchString(m) {
			bad("bad module name %q", m)
		}
	}
	for _, t := range d.AllTools() {
		if !path.IsAbs(t) || path.Clean(t) != t {
			bad("tool %q: want a clean absolute path", t)
		}
	}
	for arch, ms := range d.BootMS {
		if !d.Supports(arch) {
			bad("boot_ms for %s, which has no kernel", arch)
		}
		if ms <= 0 {
			bad("boot_ms %s: %d is not a positive number of milliseconds", arch, ms)
		}
	}
	return errors.Join(errs...)
}

func driverModules(d *Def) [][]string {
	var out [][]string
	for _, ds := range d.Filesystems {
		for _, dr := range ds {
			out = append(out, dr.Modules)
		}
	}
	return out
}

// shipped holds the definitions that come with qmount.
//
//go:embed */guest.json
var shipped embed.FS

// ShippedDefs returns the definitions embedded in the binary.
func ShippedDefs() ([]*Def, error) {
	return readDefs(shipped, ".", "guests", true)
}

// ReadDefs reads every NAME/guest.json in dir. The directory name must
// match the definition's name.
func ReadDefs(dir string) ([]*Def, error) {
	return readDefs(os.DirFS(dir), ".", dir, false)
}

func readDefs(fsys fs.FS, root, dirName string, isShipped bool) ([]*Def, error) {
	ents, err := fs.ReadDir(fsys, root)
	if err != nil {
		return nil, fmt.Errorf("reading guest definitions in %s: %w", dirName, err)
	}
	var defs []*Def
	var errs []error
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		b, err := fs.ReadFile(fsys, path.Join(root, e.Name(), DefFile))
		if errors.Is(err, fs.ErrNotExist) {
			continue // not a guest (e.g. guests/agent)
		}
		file := filepath.Join(dirName, e.Name(), DefFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("reading %s: %w", file, err))
			continue
		}
		d, err := ParseDef(b)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", file, err))
			continue
		}
		if d.Name != e.Name() {
			errs = append(errs, fmt.Errorf("%s: name %q differs from its directory %q", file, d.Name, e.Name()))
			continue
		}
		d.Dir = filepath.Join(dirName, e.Name())
		d.Shipped = isShipped
		defs = append(defs, d)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return defs, nil
}

// DefDirs returns the user definition directories named by $QMOUNT_GUEST_DEFS.
func DefDirs() []string {
	var out []string
	for _, d := range filepath.SplitList(os.Getenv(EnvDefs)) {
		if d != "" {
			out = append(out, d)
		}
	}
	return out
}

// LoadDefs returns the shipped definitions overlaid with those in dirs (a
// later definition of the same name replaces an earlier one), sorted by
// name.
func LoadDefs(dirs ...string) ([]*Def, error) {
	defs, err := ShippedDefs()
	if err != nil {
		return nil, err
	}
	byName := map[string]*Def{}
	for _, d := range defs {
		byName[d.Name] = d
	}
	for _, dir := range dirs {
		ds, err := ReadDefs(dir)
		if err != nil {
			return nil, err
		}
		for _, d := range ds {
			byName[d.Name] = d
		}
	}
	return slices.SortedFunc(maps.Values(byName), func(a, b *Def) int { return strings.Compare(a.Name, b.Name) }), nil
}

// LookupDef returns the definition named name from LoadDefs(dirs...).
func LookupDef(name string, dirs ...string) (*Def, error) {
	defs, err := LoadDefs(dirs...)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, d := range defs {
		if d.Name == name {
			return d, nil
		}
		names = append(names, d.Name)
	}
	return nil, fmt.Errorf("unknown guest %q (known: %s)", name, strings.Join(names, ", "))
}
