package guests

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/qmount/qmount/initramfs"
)

// Default is the guest used when nothing else is asked for.
const Default = "linux"

// EnvDirs names the environment variable with extra guest roots.
const EnvDirs = "QMOUNT_GUESTS"

// Built is a guest ready to boot.
type Built struct {
	Name, Arch string
	Dir        string // the guest's directory
	Kernel     string // path of the bootable kernel image
	Initrd     string // path of the initramfs
	Manifest   *initramfs.Manifest
	// Def is the definition the guest was built from, with only the
	// drivers the build has (nil for builds that recorded none).
	Def *Def
}

// Roots returns the directories searched for built guests.
func Roots() []string {
	var roots []string
	for _, d := range filepath.SplitList(os.Getenv(EnvDirs)) {
		if d != "" {
			roots = append(roots, d)
		}
	}
	if exe, err := os.Executable(); err == nil {
		if r, err := filepath.EvalSymlinks(exe); err == nil {
			exe = r
		}
		dir := filepath.Dir(exe)
		roots = append(roots, filepath.Join(dir, "guests"), filepath.Join(dir, "..", "share", "qmount", "guests"))
	}
	return roots
}

// HostArch is the guest architecture that runs natively on this host.
func HostArch() string { return runtime.GOARCH }

// ErrNotBuilt means no root holds the guest.
var ErrNotBuilt = errors.New("guest not built")

// Find returns the built guest name for arch (empty: the host's).
func Find(name, arch string) (*Built, error) {
	if name == "" {
		name = Default
	}
	if arch == "" {
		arch = HostArch()
	}
	if strings.ContainsAny(name, "/\\") || strings.HasPrefix(name, ".") {
		return nil, fmt.Errorf("invalid guest name %q", name)
	}
	roots := Roots()
	for _, root := range roots {
		dir := filepath.Join(root, name, arch)
		b, err := Load(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return b, nil
	}
	return nil, fmt.Errorf("%w: guest %q for %s is not in %s; build it with `make guest GUEST=%s ARCH=%s`",
		ErrNotBuilt, name, arch, strings.Join(roots, ", "), name, arch)
}

// Load reads the built guest in dir.
func Load(dir string) (*Built, error) {
	m, err := initramfs.ReadManifest(dir)
	if err != nil {
		return nil, fmt.Errorf("reading guest manifest in %s: %w", dir, err)
	}
	b := &Built{
		Name:     m.Name,
		Arch:     m.Arch,
		Dir:      dir,
		Kernel:   filepath.Join(dir, m.Kernel.File),
		Initrd:   filepath.Join(dir, m.Initramfs.File),
		Manifest: m,
	}
	for _, p := range []string{b.Kernel, b.Initrd} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("guest in %s is incomplete (rebuild it): %w", dir, err)
		}
	}
	if b.Def, err = readBuiltDef(os.DirFS(dir)); err != nil {
		return nil, fmt.Errorf("reading the definition of the guest in %s: %w", dir, err)
	}
	return b, nil
}
