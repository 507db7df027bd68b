// Package source parses what `qmount mount` is asked to mount: one disk
// (DISK or DISK@N), a logical volume (lvm:VG:DISK[:DISK...]:LV), a Linux
// RAID array (raid:DISK[:DISK...]) or a multi-device filesystem such as a
// btrfs RAID (DISK:DISK[:DISK...]).
package source

import (
	"errors"
	"fmt"
	"strings"

	"github.com/qmount/qmount/internal/wire"
)

// Kinds of source.
const (
	Single = "disk"  // one disk, maybe a partition of it
	LVM    = "lvm"   // an LVM logical volume over Disks
	RAID   = "raid"  // an md array of Disks
	Multi  = "multi" // one filesystem over several disks (btrfs)
)

// MaxDisks bounds the disks of one source.
const MaxDisks = 16

// Source is a parsed identifier.
type Source struct {
	Kind  string
	Disks []string // as given (each may end in @N for Single only)
	VG    string   // LVM
	LV    string   // LVM; empty: the VG's only LV
}

// Parse parses id. exists reports whether a path names an existing file
// or device: a path that exists is always one disk, even if it has a
// colon in its name.
func Parse(id string, exists func(string) bool) (*Source, error) {
	if id == "" {
		return nil, errors.New("no disk given")
	}
	if exists != nil && exists(id) {
		return &Source{Kind: Single, Disks: []string{id}}, nil
	}
	switch {
	case strings.HasPrefix(id, "lvm:"):
		parts := strings.Split(strings.TrimPrefix(id, "lvm:"), ":")
		if len(parts) < 3 {
			return nil, fmt.Errorf("%s: an LVM volume is lvm:VG:DISK[:DISK...]:LV", id)
		}
		s := &Source{Kind: LVM, VG: parts[0], LV: parts[len(parts)-1], Disks: parts[1 : len(parts)-1]}
		if !wire.ValidLVMName(s.VG) {
			return nil, fmt.Errorf("%s: %q is not a volume group name", id, s.VG)
		}
		if s.LV != "" && !wire.ValidLVMName(s.LV) {
			return nil, fmt.Errorf("%s: %q is not a logical volume name", id, s.LV)
		}
		return s, s.checkDisks(id)
	case strings.HasPrefix(id, "raid:"):
		s := &Source{Kind: RAID, Disks: strings.Split(strings.TrimPrefix(id, "raid:"), ":")}
		return s, s.checkDisks(id)
	case strings.Contains(id, ":"):
		s := &Source{Kind: Multi, Disks: strings.Split(id, ":")}
		if err := s.checkDisks(id); err != nil {
			return nil, err
		}
		if len(s.Disks) < 2 {
			return nil, fmt.Errorf("%s: no such file or device", id)
		}
		return s, nil
	}
	return &Source{Kind: Single, Disks: []string{id}}, nil
}

func (s *Source) checkDisks(id string) error {
	if len(s.Disks) == 0 {
		return fmt.Errorf("%s: no disk given", id)
	}
	if len(s.Disks) > MaxDisks {
		return fmt.Errorf("%s: %d disks, at most %d", id, len(s.Disks), MaxDisks)
	}
	for _, d := range s.Disks {
		if d == "" {
			return fmt.Errorf("%s: an empty disk name", id)
		}
	}
	return nil
}

// String renders s as an identifier.
func (s *Source) String() string {
	switch s.Kind {
	case LVM:
		return "lvm:" + s.VG + ":" + strings.Join(s.Disks, ":") + ":" + s.LV
	case RAID:
		return "raid:" + strings.Join(s.Disks, ":")
	}
	return strings.Join(s.Disks, ":")
}
