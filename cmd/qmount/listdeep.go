package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/qmount/qmount/guests"
	"github.com/qmount/qmount/internal/secret"
	"github.com/qmount/qmount/internal/wire"
	"github.com/qmount/qmount/session"
	"github.com/qmount/qmount/vmm"
)

// deepScript runs in the storage guest for `qmount list -d`: it opens the
// encrypted container on disk 0 (partition $1, 0 for the whole disk)
// read-only with the passphrase on stdin, and prints blkid's view of what
// is inside, then of each logical volume when that is an LVM PV.
const deepScript = `dev=$(readlink -f /dev/disk/qmount/qmount0)
[ "$1" != 0 ] && dev=$dev$1
mkdir -p /run/cryptsetup
cryptsetup open --readonly --key-file=- "$dev" qmlist 2>/dev/null || exit 2
echo "@inner"
/usr/sbin/blkid -p -o export /dev/mapper/qmlist
if /usr/sbin/blkid -p -o value -s TYPE /dev/mapper/qmlist | grep -q LVM2_member; then
	lvm vgchange -q --config 'devices { obtain_device_list_from_udev=0 } activation { udev_sync=0 udev_rules=0 monitoring=0 }' -ay >/dev/null 2>&1
	lvm lvs --noheadings --separator / -o vg_name,lv_name 2>/dev/null | while read -r l; do
		echo "@lv $l"
		/usr/sbin/blkid -p -o export "/dev/$l"
	done
	lvm vgchange -q -an >/dev/null 2>&1
fi
cryptsetup close qmlist
`

// listInside adds, below each encrypted container of disks, what it holds
// (a filesystem, or an LVM PV and the filesystems of its logical
// volumes), unlocking it read-only in a storage guest. A container that
// cannot be opened gets an entry saying why.
func listInside(ctx context.Context, disks []listedDisk, src *secret.Source) {
	for i := range disks {
		d := &disks[i]
		var added []listEntry
		for _, e := range d.Entries {
			if e.Type != "crypto_LUKS" && e.Type != "BitLocker" {
				continue
			}
			added = append(added, e)
			inner, err := openAndList(ctx, d.Disk, e, src)
			if err != nil {
				d.Notes = append(d.Notes, fmt.Sprintf("%s: not opened: %v", e.Identifier, err))
				continue
			}
			added = append(added, inner...)
		}
		if len(added) == 0 {
			continue
		}
		// Each container followed by its contents.
		var out []listEntry
		for _, e := range d.Entries {
			if e.Type != "crypto_LUKS" && e.Type != "BitLocker" {
				out = append(out, e)
				continue
			}
			for len(added) > 0 && added[0].Index == e.Index {
				out = append(out, added[0])
				added = added[1:]
			}
		}
		d.Entries = out
	}
}

func openAndList(ctx context.Context, disk string, e listEntry, src *secret.Source) ([]listEntry, error) {
	kind := "LUKS"
	if e.Type == "BitLocker" {
		kind = "BitLocker"
	}
	name := disk
	if e.Index > 0 {
		name = e.Identifier
	}
	pass, err := src.Passphrase(ctx, name, kind, 1)
	if err != nil {
		return nil, err
	}
	var out strings.Builder
	code, err := runDeep(ctx, disk, e.Index, pass, &out)
	if err != nil {
		return nil, err
	}
	if code == 2 {
		return nil, fmt.Errorf("wrong passphrase for %s", name)
	}
	if code != 0 {
		return nil, fmt.Errorf("looking inside failed (status %d)", code)
	}
	return parseDeep(out.String(), e), nil
}

// runDeep boots the storage guest with disk read-only and runs deepScript.
func runDeep(ctx context.Context, disk string, part int, pass string, out io.Writer) (int, error) {
	g, err := guests.Find(guests.Storage, "")
	if err != nil {
		return -1, fmt.Errorf("looking inside needs the %s guest: %w", guests.Storage, err)
	}
	drv, err := newDriver(slog.New(slog.DiscardHandler))
	if err != nil {
		return -1, err
	}
	dir, err := os.MkdirTemp("", "qmount-list-")
	if err != nil {
		return -1, err
	}
	defer os.RemoveAll(dir)
	format, err := imageFormat(disk)
	if err != nil {
		return -1, err
	}
	cfg := session.Config{
		Driver: drv,
		Machine: vmm.Config{
			Kernel: g.Kernel, Initrd: g.Initrd, Arch: g.Arch, MemoryMiB: 1024, CPUs: 1,
			ConsoleLog: filepath.Join(dir, "console.log"), StateDir: dir,
			Disks: []vmm.Disk{{Path: disk, Format: format, ReadOnly: true, Serial: wire.DiskSerial(0)}},
		},
	}
	req := wire.ExecRequest{Args: []string{"sh", "-c", deepScript, "list", strconv.Itoa(part)}, Disks: []string{wire.DiskSerial(0)}}
	return session.Exec(ctx, cfg, req, strings.NewReader(pass), out)
}

// parseDeep turns deepScript's output into entries below container e.
func parseDeep(out string, e listEntry) []listEntry {
	var entries []listEntry
	var cur *listEntry
	vg := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "@inner":
			entries = append(entries, listEntry{Index: e.Index, Type: "unknown", Identifier: e.Identifier})
			cur = &entries[len(entries)-1]
		case strings.HasPrefix(line, "@lv "):
			v, lv, _ := strings.Cut(strings.TrimPrefix(line, "@lv "), "/")
			vg = v
			entries = append(entries, listEntry{Index: e.Index, Type: "unknown", Name: lv,
				Identifier: "lvm:" + v + ":" + e.Identifier + ":" + lv})
			cur = &entries[len(entries)-1]
		case cur != nil:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				continue
			}
			switch k {
			case "TYPE":
				cur.Type = v
			case "LABEL":
				if cur.Name == "" {
					cur.Name = v
				} else {
					cur.Name += " (" + v + ")"
				}
			case "UUID":
				cur.UUID = v
			}
		}
	}
	for i := range entries {
		entries[i].Type = "  " + entries[i].Type // shown inside the container
		if strings.TrimSpace(entries[i].Type) == "LVM2_member" {
			entries[i].Identifier = ""
			if entries[i].Name == "" {
				entries[i].Name = vg
			}
		}
	}
	return entries
}
