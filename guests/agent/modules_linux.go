package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// KernelModules loads modules of the running kernel with finit_module(2),
// using its depmod-format modules.dep. Modules must be uncompressed (the
// initramfs builder decompresses them: in-guest decompression under TCG is
// slow). It is safe for concurrent use.
type KernelModules struct {
	db *ModuleDB
}

var _ ModuleLoader = (*KernelModules)(nil)

// NewKernelModules opens the module index of kernel release under
// /lib/modules or /usr/lib/modules.
func NewKernelModules(release string) (*KernelModules, error) {
	var err error
	for _, base := range []string{"/lib/modules", "/usr/lib/modules"} {
		var db *ModuleDB
		db, err = OpenModuleDB(filepath.Join(base, release))
		if err == nil {
			return &KernelModules{db: db}, nil
		}
	}
	return nil, err
}

// Load loads the named modules and their dependencies. Modules built into
// the kernel or already loaded (present in /sys/module) are skipped.
func (k *KernelModules) Load(ctx context.Context, names ...string) error {
	return k.db.Load(ctx, names, modulePresent, finitModule)
}

// modulePresent reports whether the kernel has a module of that name,
// loaded or built in (built-in modules with parameters or a version show
// up in /sys/module too; the others are listed in modules.builtin).
func modulePresent(name string) bool {
	_, err := os.Stat(filepath.Join("/sys/module", name))
	return err == nil
}

func finitModule(_ context.Context, name, path string) error {
	for _, suf := range []string{".xz", ".gz", ".zst"} {
		if strings.HasSuffix(path, suf) {
			return fmt.Errorf("%s is compressed; the initramfs must hold uncompressed modules", path)
		}
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	defer unix.Close(fd)
	if err := unix.FinitModule(fd, "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("finit_module %s: %w", path, err)
	}
	return nil
}
