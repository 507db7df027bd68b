package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/qmount/qmount/initramfs"
)

// guestDef is what a guest is built from. (Guest definitions under
// guests/NAME/ will feed this; for now the default guest is defined here.)
type guestDef struct {
	Name string
	// KernelPackage is the Debian kernel package; "" = linux-image-<arch>.
	KernelPackage string
	// Modules must all exist (or be built in); OptionalModules are
	// shipped when the kernel has them.
	Modules, OptionalModules []string
	// BootModules are loaded by the guest at boot; FSModules[fstype]
	// before mounting fstype. Both go to the guest info file.
	BootModules []string
	FSModules   map[string][]string
	// Tools are programs shipped with their libraries.
	Tools []string
}

// guestInfoPath is where the guest agent reads its manifest
// (guests/agent.GuestInfoPath).
const guestInfoPath = "etc/qmount/guest.json"

// guestInfo is the guest agent's manifest (guests/agent.GuestInfo).
type guestInfo struct {
	Kernel      string              `json:"kernel"`
	BootModules []string            `json:"boot_modules,omitempty"`
	FSModules   map[string][]string `json:"fs_modules,omitempty"`
}

var guestDefs = map[string]guestDef{
	"linux": {
		Name:    "linux",
		Modules: initramfs.DefaultModules,
		BootModules: []string{
			"virtio_mmio", "virtio_pci", "virtio_blk", "virtio_console",
			"vmw_vsock_virtio_transport",
		},
		FSModules: map[string][]string{
			// ext4's driver serves ext2 and ext3 (CONFIG_EXT4_USE_FOR_EXT2);
			// crc32c_generic is also a folded pre-softdep in modules.dep.
			"ext2":     {"crc32c_generic", "ext4"},
			"ext3":     {"crc32c_generic", "ext4"},
			"ext4":     {"crc32c_generic", "ext4"},
			"btrfs":    {"crc32c_generic", "btrfs"},
			"xfs":      {"crc32c_generic", "xfs"},
			"vfat":     {"vfat", "nls_cp437", "nls_iso8859_1", "nls_utf8"},
			"exfat":    {"exfat", "nls_utf8"},
			"f2fs":     {"f2fs"},
			"jfs":      {"jfs"},
			"nilfs2":   {"nilfs2"},
			"iso9660":  {"isofs"},
			"squashfs": {"squashfs"},
			"udf":      {"udf"},
			"fuse":     {"fuse"},
		},
	},
}

func knownGuests() string {
	return strings.Join(slices.Sorted(maps.Keys(guestDefs)), ", ")
}

func lookupGuest(name string) (guestDef, error) {
	g, ok := guestDefs[name]
	if !ok {
		return g, fmt.Errorf("unknown guest %q (known: %s)", name, knownGuests())
	}
	g.Modules = slices.Clone(g.Modules)
	g.Tools = slices.Clone(g.Tools)
	return g, nil
}
