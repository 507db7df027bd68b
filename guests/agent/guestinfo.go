package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
)

// GuestInfoPath is where the initramfs builder writes the guest's manifest.
const GuestInfoPath = "/etc/qmount/guest.json"

// GuestInfo is the manifest the initramfs builder writes at GuestInfoPath.
// It names the kernel release and the modules the guest loads: BootModules
// at start (transports, virtio_blk, virtio_console, vsock), and, when a
// mount request arrives, FSModules[fstype] (or the module named like the
// fstype when the map has no entry). The lists are explicit because
// modules.dep carries no softdeps (ext4 needs crc32c_generic).
type GuestInfo struct {
	Kernel      string              `json:"kernel"`
	BootModules []string            `json:"boot_modules,omitempty"`
	FSModules   map[string][]string `json:"fs_modules,omitempty"`
}

// ReadGuestInfo reads the manifest at path. A missing file yields an empty
// GuestInfo and no error: a guest may have everything built in.
func ReadGuestInfo(path string) (*GuestInfo, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &GuestInfo{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading guest info: %w", err)
	}
	return ParseGuestInfo(b)
}

// ParseGuestInfo decodes a manifest.
func ParseGuestInfo(b []byte) (*GuestInfo, error) {
	var g GuestInfo
	if err := json.Unmarshal(b, &g); err != nil {
		return nil, fmt.Errorf("decoding guest info: %w", err)
	}
	return &g, nil
}

// ModulesFor returns the modules to load before mounting fstype, in order:
// FSModules[fstype] when the manifest lists it, else the fstype itself
// (most filesystem modules are named like their type). It returns nil for
// an empty fstype.
func (g *GuestInfo) ModulesFor(fstype string) []string {
	if fstype == "" {
		return nil
	}
	if g != nil {
		if mods, ok := g.FSModules[fstype]; ok {
			return slices.Clone(mods)
		}
	}
	return []string{fstype}
}

// AllFSModules returns the union of every FSModules list, sorted, for when
// the type of a filesystem is unknown and every driver may be needed.
func (g *GuestInfo) AllFSModules() []string {
	if g == nil {
		return nil
	}
	var out []string
	for _, mods := range g.FSModules {
		out = append(out, mods...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// BootModuleList returns the modules to load at boot: the manifest's
// BootModules followed by extra (the qmount.modules boot parameter, comma
// separated), without duplicates (treating '-' and '_' alike).
func (g *GuestInfo) BootModuleList(extra string) []string {
	var out []string
	seen := map[string]bool{}
	add := func(m string) {
		m = strings.TrimSpace(m)
		if m == "" || seen[ModuleName(m)] {
			return
		}
		seen[ModuleName(m)] = true
		out = append(out, m)
	}
	if g != nil {
		for _, m := range g.BootModules {
			add(m)
		}
	}
	for _, m := range strings.Split(extra, ",") {
		add(m)
	}
	return out
}
