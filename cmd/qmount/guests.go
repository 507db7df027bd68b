package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/qmount/qmount/guests"
	"github.com/urfave/cli/v2"
)

func init() {
	commands = append(commands, &cli.Command{
		Name:  "guests",
		Usage: "list guests (shipped and user-defined): built or not per architecture, kernel, sizes, filesystems",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print a JSON list (stable field names)"},
			&cli.StringSliceFlag{Name: "defs", Usage: "extra guest definition `DIR` holding NAME/guest.json (repeatable; also $" + guests.EnvDefs + ")"},
		},
		Action: func(c *cli.Context) error {
			cat, err := guests.LoadCatalogue(c.StringSlice("defs")...)
			if err != nil {
				return err
			}
			list := listGuests(cat)
			if c.Bool("json") {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(list)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "GUEST\tARCH\tBUILT\tKERNEL\tSIZE\tBOOT\tFILESYSTEMS")
			for _, g := range list {
				for _, b := range g.Arches {
					built, kernel, size := "no", b.Kernel, "-"
					if b.Built {
						built = "yes"
						kernel = b.Release
						size = fmt.Sprintf("%s+%s", mib(b.KernelBytes), mib(b.InitrdBytes))
					}
					boot := "-"
					if b.BootMS > 0 {
						boot = fmt.Sprintf("~%.1fs", float64(b.BootMS)/1000)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", g.Name, b.Arch, built, kernel, size, boot, fsColumn(b.Filesystems))
				}
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			for _, g := range list {
				for _, b := range g.Arches {
					if !b.Built && b.Arch == guests.HostArch() {
						fmt.Printf("build %s: %s\n", g.Name, b.BuildHint)
					}
				}
			}
			for _, p := range cat.Problems {
				fmt.Fprintf(os.Stderr, "qmount: %v\n", p)
			}
			return nil
		},
	})
}

// guestListing is one guest in `qmount guests --json`.
type guestListing struct {
	Name        string        `json:"name"`
	Description string        `json:"description,omitempty"`
	Shipped     bool          `json:"shipped"` // comes with qmount
	DefDir      string        `json:"def_dir"` // where the definition was read
	Default     bool          `json:"default"` // the default guest
	Arches      []archListing `json:"arches"`  // one per supported architecture
}

// archListing is a guest for one architecture.
type archListing struct {
	Arch   string `json:"arch"`
	Kernel string `json:"kernel"` // where the kernel comes from (package or source + config)
	Built  bool   `json:"built"`
	BootMS int    `json:"boot_ms,omitempty"` // measured boot time, if known
	// Filesystems maps each filesystem to its driver types (the built
	// guest's when built: optional drivers may be missing).
	Filesystems map[string][]string `json:"filesystems"`
	// Built guests only.
	Dir         string    `json:"dir,omitempty"`
	Release     string    `json:"release,omitempty"` // kernel release (uname -r)
	KernelBytes int64     `json:"kernel_bytes,omitempty"`
	InitrdBytes int64     `json:"initrd_bytes,omitempty"`
	Modules     int       `json:"modules,omitempty"` // modules shipped
	BuiltAt     time.Time `json:"built_at,omitzero"`
	// BuildHint is the command that builds it, when not built.
	BuildHint string `json:"build_hint,omitempty"`
}

func listGuests(cat *guests.Catalogue) []guestListing {
	list := []guestListing{}
	for _, d := range cat.Defs {
		g := guestListing{Name: d.Name, Description: d.Description, Shipped: d.Shipped, DefDir: d.Dir, Default: d.Name == guests.Default}
		for _, arch := range d.Arches() {
			a := archListing{Arch: arch, Kernel: d.Kernel[arch].String(), BootMS: d.BootMS[arch], Filesystems: fsDrivers(d)}
			if b := cat.Built[guests.Key(d.Name, arch)]; b != nil {
				m := b.Manifest
				a.Built, a.Dir, a.Release = true, b.Dir, m.Kernel.Release
				a.KernelBytes, a.InitrdBytes, a.Modules, a.BuiltAt = m.Kernel.Size, m.Initramfs.Size, len(m.Initramfs.Modules), m.Built
				if b.Def != nil {
					a.Filesystems = fsDrivers(b.Def)
				}
			} else {
				a.BuildHint = guests.BuildHint(d, arch)
			}
			g.Arches = append(g.Arches, a)
		}
		list = append(list, g)
	}
	return list
}

func fsDrivers(d *guests.Def) map[string][]string {
	out := map[string][]string{}
	for _, fs := range d.FSTypes() {
		for _, dr := range d.Filesystems[fs] {
			out[fs] = append(out[fs], dr.Type)
		}
	}
	return out
}

// fsColumn prints filesystems, with their drivers when named otherwise:
// "ext4 ntfs(ntfs-3g)".
func fsColumn(fss map[string][]string) string {
	var parts []string
	for _, fs := range slices.Sorted(maps.Keys(fss)) {
		ds := fss[fs]
		if len(ds) == 1 && ds[0] == fs {
			parts = append(parts, fs)
			continue
		}
		parts = append(parts, fs+"("+strings.Join(ds, ",")+")")
	}
	return strings.Join(parts, " ")
}

func mib(n int64) string {
	return fmt.Sprintf("%.1fM", float64(n)/(1<<20))
}
