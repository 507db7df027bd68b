package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"

	"github.com/qmount/qmount/guests"
	"github.com/qmount/qmount/initramfs"
)

// guestInfoPath is where the guest agent reads its manifest
// (guests/agent.GuestInfoPath).
const guestInfoPath = "etc/qmount/guest.json"

// guestInfo is the guest agent's manifest (guests/agent.GuestInfo).
type guestInfo struct {
	Kernel      string              `json:"kernel"`
	BootModules []string            `json:"boot_modules,omitempty"`
	FSModules   map[string][]string `json:"fs_modules,omitempty"`
}

// lookupGuest returns the definition name from the shipped ones, those
// in $QMOUNT_GUEST_DEFS and those in defDirs (later ones win).
func lookupGuest(name string, defDirs ...string) (*guests.Def, error) {
	return guests.LookupDef(name, append(guests.DefDirs(), defDirs...)...)
}

// resolveConfig finds a kernel config fragment named in d: relative to the
// definition's directory first, then to the working directory (the
// repository root, for kernels/configs/...).
func resolveConfig(d *guests.Def, p string) (string, error) {
	if filepath.IsAbs(p) {
		return p, nil
	}
	for _, c := range []string{filepath.Join(d.Dir, p), p} {
		if _, err := os.Stat(c); err == nil {
			return c, nil
		}
	}
	return "", fmt.Errorf("guest %s: kernel config %s not found in %s or the working directory (run from the repository root)", d.Name, p, d.Dir)
}

// plan is what goes into one guest build once the kernel is known.
type plan struct {
	// Def is the definition as built: drivers whose modules or tools are
	// missing are dropped (optional ones, or all when the kernel was
	// overridden).
	Def                      *guests.Def
	Modules, OptionalModules []string
	Tools                    []string
	Dropped                  []string // "fstype/type: why"
}

// planBuild decides, for the kernel's module index (nil: a kernel without
// modules, everything built in), which drivers the guest gets and what it
// ships. allOptional treats every module as optional (another kernel than
// the definition names).
func planBuild(d *guests.Def, ix *initramfs.ModuleIndex, arch, toolRoot string, extraModules, extraTools []string, allOptional bool, log *slog.Logger) (*plan, error) {
	eff := *d
	eff.Filesystems = map[string]guests.Drivers{}
	p := &plan{Def: &eff}
	haveModule := func(m string) bool {
		if ix == nil {
			return true // built in: a kernel without modules has them all or none
		}
		_, ok := ix.Module(initramfs.ModName(m))
		return ok || ix.Builtin(m)
	}
	var required, optional []string
	add := func(list *[]string, names ...string) {
		for _, n := range names {
			if !slices.Contains(*list, n) {
				*list = append(*list, n)
			}
		}
	}
	add(&required, d.Modules...)
	add(&required, extraModules...)
	add(&optional, d.OptionalModules...)
	var tools []string
	add(&tools, d.Tools...)
	add(&tools, extraTools...)
	for _, t := range tools {
		if err := checkTool(toolRoot, t, arch); err != nil {
			return nil, fmt.Errorf("guest %s: %w", d.Name, err)
		}
	}
	var errs []error
	for _, fsType := range d.FSTypes() {
		for _, dr := range d.Filesystems[fsType] {
			var why []string
			mods := slices.Clone(dr.Modules)
			if dr.FUSE {
				mods = append(mods, "fuse")
			}
			for _, m := range mods {
				if !haveModule(m) {
					why = append(why, "no module "+m)
				}
			}
			for _, t := range dr.Tools {
				if err := checkTool(toolRoot, t, arch); err != nil {
					why = append(why, err.Error())
				}
			}
			if len(why) > 0 {
				msg := fmt.Sprintf("%s/%s: %v", fsType, dr.Type, why)
				if !dr.Optional && !allOptional {
					errs = append(errs, fmt.Errorf("driver %s", msg))
					continue
				}
				p.Dropped = append(p.Dropped, msg)
				log.Warn("driver left out of the guest", "guest", d.Name, "arch", arch, "fstype", fsType, "driver", dr.Type, "why", why)
				continue
			}
			add(&required, mods...)
			add(&tools, dr.Tools...)
			eff.Filesystems[fsType] = append(eff.Filesystems[fsType], dr)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("guest %s for %s: %w", d.Name, arch, err)
	}
	if len(eff.Filesystems) == 0 {
		return nil, fmt.Errorf("guest %s for %s: no driver left (dropped: %v)", d.Name, arch, p.Dropped)
	}
	if ix == nil {
		// Nothing to ship: the kernel has no loadable modules.
		required, optional = nil, nil
	} else if allOptional {
		required, optional = nil, append(required, optional...)
	}
	p.Modules, p.OptionalModules, p.Tools = required, optional, tools
	return p, nil
}

// checkTool checks that tool exists in root and is an ELF program for
// arch (an amd64 host's /usr/bin cannot serve an arm64 guest: pass an
// arm64 sysroot as --tool-root).
func checkTool(root, tool, arch string) error {
	p := tool
	if root != "" && root != "/" {
		p = filepath.Join(root, tool)
	}
	if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("tool %s not installed in %s", tool, rootName(root))
	}
	if _, err := initramfs.ELFInterp(p, arch); err != nil {
		return fmt.Errorf("tool %s in %s is not a program for %s (pass a sysroot of that architecture as --tool-root): %w", tool, rootName(root), arch, err)
	}
	return nil
}

func rootName(root string) string {
	if root == "" {
		return "/"
	}
	return root
}

// guestInfoFor writes the guest agent's module lists, keeping the modules
// the initramfs ships or the kernel has built in. For a kernel without
// modules (set == nil) every driver's list is empty: nothing to load.
func guestInfoFor(d *guests.Def, release string, set *initramfs.ModuleSet) guestInfo {
	info := guestInfo{Kernel: release, FSModules: map[string][]string{}}
	if set == nil {
		for typ := range d.FSModules() {
			info.FSModules[typ] = []string{}
		}
		return info
	}
	have := map[string]bool{}
	for _, n := range set.Names() {
		have[n] = true
	}
	keep := func(names []string) []string {
		out := []string{}
		for _, n := range names {
			n = initramfs.ModName(n)
			if (have[n] || set.Index.Builtin(n)) && !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
		return out
	}
	info.BootModules = keep(d.BootModules)
	for typ, mods := range d.FSModules() {
		info.FSModules[typ] = keep(mods)
	}
	return info
}
