package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/qmount/qmount/probe"
	"github.com/urfave/cli/v2"
)

func init() {
	commands = append(commands, &cli.Command{
		Name:      "list",
		Usage:     "list disks, partitions, containers and filesystems (read-only; nothing is mounted)",
		ArgsUsage: "[DISK...]",
		Description: `Without DISK, lists every block device of this machine. Each line's IDENTIFIER
is what "qmount mount" accepts: a device, IMAGE@N for a partition inside an
image, lvm:VG:DISK[:DISK...]:LV for a logical volume and raid:DISK:DISK[...]
for a Linux RAID array (volume groups and arrays are shown as synthesized
disks). Linux filesystems are listed by default; -m adds Microsoft ones
(NTFS, exFAT, FAT) and BitLocker. -d looks inside encrypted containers:
it asks for their passphrase and lists the filesystem (or the LVM volumes)
inside, indented below the container.`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "microsoft", Aliases: []string{"m"}, Usage: "also list Microsoft filesystems (NTFS, exFAT, FAT, BitLocker)"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON (field names are stable; see README)"},
			&cli.BoolFlag{Name: "deep", Aliases: []string{"d"}, Usage: "also show what encrypted containers hold, unlocking them read-only in a guest (passphrase from --key-file, $QMOUNT_PASSPHRASE or the terminal)"},
			&cli.StringFlag{Name: "key-file", Usage: "with -d: read the passphrase from `FILE`"},
		},
		Action: listAction,
	})
}

// listedDisk is one disk of `qmount list`, real or synthesized.
type listedDisk struct {
	Disk string `json:"disk"`
	// Kind is internal, external, image, lvm (a volume group) or raid.
	Kind    string      `json:"kind"`
	Size    int64       `json:"size"`
	Entries []listEntry `json:"entries"`
	// Probe is everything probe found, for scripts that want more.
	Probe *probe.Result `json:"probe,omitempty"`
	// Error says why the disk could not be read (permission...).
	Error string `json:"error,omitempty"`
	// Notes say what -d could not look into, and why.
	Notes []string `json:"notes,omitempty"`
}

// listEntry is one line of a disk's table.
type listEntry struct {
	// Index is the partition number; 0 is the disk itself.
	Index int    `json:"index"`
	Type  string `json:"type"` // filesystem or container type, or the partition table type
	Name  string `json:"name,omitempty"`
	UUID  string `json:"uuid,omitempty"`
	Size  int64  `json:"size"`
	// Identifier is what `qmount mount` takes for this entry; empty for
	// entries that are not mountable by themselves (a table, an LVM PV).
	Identifier string `json:"identifier,omitempty"`
}

func listAction(c *cli.Context) error {
	disks := c.Args().Slice()
	if len(disks) == 0 {
		var err error
		if disks, err = systemDisks(); err != nil {
			return fmt.Errorf("listing disks: %w", err)
		}
	}
	var out []listedDisk
	for _, d := range disks {
		ld, err := listDisk(c, d)
		if err != nil {
			if c.NArg() > 0 {
				return err
			}
			ld = listedDisk{Disk: d, Kind: diskKind(d), Error: err.Error()}
		}
		out = append(out, ld)
	}
	out = append(out, synthesize(out)...)
	filterEntries(out, c.Bool("microsoft"))
	if c.Bool("deep") {
		listInside(c.Context, out, passphraseSource(c.String("key-file")))
	}
	if c.Bool("json") {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		if out == nil {
			out = []listedDisk{}
		}
		return enc.Encode(out)
	}
	printDisks(c.App.Writer, out)
	return nil
}

func listDisk(c *cli.Context, path string) (listedDisk, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return listedDisk{}, fmt.Errorf("no permission to read %s: run with sudo or add yourself to the disk group", path)
		}
		return listedDisk{}, fmt.Errorf("%s: %w", path, unwrapPath(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return listedDisk{}, err
	}
	if st.IsDir() {
		return listedDisk{}, fmt.Errorf("%s is a directory, not a disk or an image", path)
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return listedDisk{}, fmt.Errorf("sizing %s: %w", path, err)
	}
	res, err := probe.Probe(c.Context, f, size)
	if err != nil {
		return listedDisk{}, fmt.Errorf("probing %s: %w", path, err)
	}
	ld := listedDisk{Disk: path, Kind: diskKind(path), Size: size, Probe: res}
	image := ld.Kind == "image"
	partID := func(i int) string {
		if image {
			return fmt.Sprintf("%s@%d", path, i)
		}
		return partitionDevice(path, i)
	}
	switch {
	case res.Table != nil:
		ld.Entries = append(ld.Entries, listEntry{Index: 0, Type: tableName(res.Table.Type), UUID: res.Table.UUID, Size: size})
	case res.Content != nil:
		ld.Entries = append(ld.Entries, contentEntry(0, res.Content, size, path))
	default:
		ld.Entries = append(ld.Entries, listEntry{Index: 0, Type: "unknown", Size: size})
	}
	for _, p := range res.Partitions {
		if p.Extended {
			continue
		}
		if p.Content == nil {
			name := p.Name
			if name == "" {
				name = p.TypeName
			}
			ld.Entries = append(ld.Entries, listEntry{Index: p.Index, Type: "unknown", Name: name, Size: p.Size})
			continue
		}
		e := contentEntry(p.Index, p.Content, p.Size, partID(p.Index))
		if e.Name == "" {
			e.Name = p.Name
		}
		ld.Entries = append(ld.Entries, e)
	}
	return ld, nil
}

func contentEntry(index int, ct *probe.Content, size int64, id string) listEntry {
	e := listEntry{Index: index, Type: ct.Type, Name: ct.Label, UUID: ct.UUID, Size: size, Identifier: id}
	switch ct.Usage {
	case "filesystem", "crypto":
	default: // raid members, swap: not mountable by themselves
		e.Identifier = ""
	}
	if ct.Type == "swap" {
		e.Identifier = ""
	}
	if ct.LVM != nil && e.Name == "" {
		e.Name = ct.LVM.VGName
	}
	return e
}

// synthesize adds a disk for each LVM volume group and each RAID array
// found on the listed disks, with the identifiers `qmount mount` takes.
func synthesize(disks []listedDisk) []listedDisk {
	type member struct {
		id  string
		res *probe.Content
	}
	vgs := map[string][]member{}
	arrays := map[string][]member{}
	for _, d := range disks {
		for _, e := range d.Entries {
			ct := entryContent(d, e.Index)
			if ct == nil {
				continue
			}
			id := d.Disk
			if e.Index > 0 {
				if d.Kind == "image" {
					id = fmt.Sprintf("%s@%d", d.Disk, e.Index)
				} else {
					id = partitionDevice(d.Disk, e.Index)
				}
			}
			if ct.LVM != nil && ct.LVM.VGName != "" {
				vgs[ct.LVM.VGName] = append(vgs[ct.LVM.VGName], member{id, ct})
			}
			if ct.MD != nil && ct.UUID != "" {
				arrays[ct.UUID] = append(arrays[ct.UUID], member{id, ct})
			}
		}
	}
	var out []listedDisk
	for _, vg := range sortedKeys(vgs) {
		ms := vgs[vg]
		ids := make([]string, len(ms))
		for i, m := range ms {
			ids[i] = m.id
		}
		ld := listedDisk{Disk: "lvm:" + vg, Kind: "lvm"}
		for i, lv := range ms[0].res.LVM.LVs {
			if !lv.Visible {
				continue
			}
			ld.Size += lv.Size
			ld.Entries = append(ld.Entries, listEntry{Index: i + 1, Type: "lvm_lv", Name: lv.Name, UUID: lv.UUID, Size: lv.Size,
				Identifier: "lvm:" + vg + ":" + strings.Join(ids, ":") + ":" + lv.Name})
		}
		out = append(out, ld)
	}
	for _, uuid := range sortedKeys(arrays) {
		ms := arrays[uuid]
		ids := make([]string, len(ms))
		for i, m := range ms {
			ids[i] = m.id
		}
		md := ms[0].res.MD
		ld := listedDisk{Disk: "raid:" + md.Name, Kind: "raid"}
		ld.Entries = append(ld.Entries, listEntry{Index: 0, Type: md.Level, Name: md.Name, UUID: uuid,
			Identifier: "raid:" + strings.Join(ids, ":")})
		out = append(out, ld)
	}
	return out
}

func entryContent(d listedDisk, index int) *probe.Content {
	if d.Probe == nil {
		return nil
	}
	if index == 0 {
		return d.Probe.Content
	}
	for i := range d.Probe.Partitions {
		if d.Probe.Partitions[i].Index == index {
			return d.Probe.Partitions[i].Content
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// microsoftTypes are hidden unless -m is given.
var microsoftTypes = map[string]bool{"ntfs": true, "exfat": true, "vfat": true, "BitLocker": true}

func filterEntries(disks []listedDisk, microsoft bool) {
	if microsoft {
		return
	}
	for i := range disks {
		kept := disks[i].Entries[:0]
		for _, e := range disks[i].Entries {
			if !microsoftTypes[e.Type] {
				kept = append(kept, e)
			}
		}
		disks[i].Entries = kept
	}
}

func printDisks(w io.Writer, disks []listedDisk) {
	for i, d := range disks {
		if i > 0 {
			fmt.Fprintln(w)
		}
		if d.Error != "" {
			fmt.Fprintf(w, "%s (%s): %s\n", d.Disk, d.Kind, d.Error)
			continue
		}
		fmt.Fprintf(w, "%s (%s, %s):\n", d.Disk, d.Kind, humanSize(d.Size))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "   #:\tTYPE\tNAME\tSIZE\tIDENTIFIER")
		for _, e := range d.Entries {
			fmt.Fprintf(tw, "%4d:\t%s\t%s\t%s\t%s\n", e.Index, e.Type, e.Name, humanSize(e.Size), e.Identifier)
		}
		tw.Flush()
		for _, n := range d.Notes {
			fmt.Fprintf(w, "   %s\n", n)
		}
	}
}

func humanSize(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "kMGTPE"[exp])
}

func tableName(t string) string {
	switch t {
	case "dos":
		return "MBR"
	case "gpt":
		return "GUID_partition_scheme"
	}
	return t
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func itoa(i int) string { return fmt.Sprint(i) }
