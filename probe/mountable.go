package probe

import (
	"fmt"
	"strconv"
	"strings"
)

// Mountable is something qmount can mount: a filesystem (or an encrypted
// container that holds one) on the whole device or in one partition.
type Mountable struct {
	// Index is the partition number, or 0 for the whole device.
	Index int `json:"index"`
	// Start and Size locate the region in bytes.
	Start int64 `json:"start"`
	Size  int64 `json:"size"`
	// Type is the content type (blkid TYPE), e.g. "ext4" or "crypto_LUKS".
	Type  string `json:"type"`
	Label string `json:"label,omitempty"`
	UUID  string `json:"uuid,omitempty"`
	// Encrypted is set for LUKS and BitLocker containers: the filesystem
	// inside is only known after unlocking.
	Encrypted bool `json:"encrypted,omitempty"`
	// PartName is the GPT partition name, if any.
	PartName string `json:"part_name,omitempty"`
}

// mountableContent reports whether c can be mounted directly (a filesystem
// other than a ZFS pool member) or unlocked and then mounted.
func mountableContent(c *Content) (ok, encrypted bool) {
	if c == nil {
		return false, false
	}
	switch c.Usage {
	case UsageFilesystem:
		return c.Type != "zfs_member", false
	case UsageCrypto:
		return c.Type == "crypto_LUKS" || c.Type == "BitLocker", true
	}
	return false, false
}

// Mountables flattens a Result into what can be mounted, in partition
// order. The whole device (index 0) is listed when it holds a filesystem
// and has no partition table, or when it is an optical image (ISO 9660,
// UDF) that also carries a hybrid partition table.
func (r *Result) Mountables() []Mountable {
	if r == nil {
		return nil
	}
	var out []Mountable
	if ok, enc := mountableContent(r.Content); ok {
		optical := r.Content.Type == "iso9660" || r.Content.Type == "udf"
		if r.Table == nil || optical {
			out = append(out, Mountable{
				Index: 0, Start: 0, Size: r.Size,
				Type: r.Content.Type, Label: r.Content.Label, UUID: r.Content.UUID, Encrypted: enc,
			})
		}
	}
	for _, p := range r.Partitions {
		ok, enc := mountableContent(p.Content)
		if !ok {
			continue
		}
		out = append(out, Mountable{
			Index: p.Index, Start: p.Start, Size: p.Size,
			Type: p.Content.Type, Label: p.Content.Label, UUID: p.Content.UUID, Encrypted: enc,
			PartName: p.Name,
		})
	}
	return out
}

// Select picks what to mount. index < 0 means "the only one": it fails when
// there is none or more than one (the error lists them). index 0 is the
// whole device, N > 0 is partition N.
func (r *Result) Select(index int) (Mountable, error) {
	ms := r.Mountables()
	if index >= 0 {
		for _, m := range ms {
			if m.Index == index {
				return m, nil
			}
		}
		if index == 0 {
			return Mountable{}, fmt.Errorf("the whole device holds no mountable filesystem")
		}
		return Mountable{}, fmt.Errorf("partition %d holds no mountable filesystem", index)
	}
	switch len(ms) {
	case 0:
		return Mountable{}, fmt.Errorf("no mountable filesystem found")
	case 1:
		return ms[0], nil
	}
	var sb strings.Builder
	for _, m := range ms {
		fmt.Fprintf(&sb, "\n  @%d %s", m.Index, m.Type)
		if m.Label != "" {
			fmt.Fprintf(&sb, " %q", m.Label)
		}
	}
	return Mountable{}, fmt.Errorf("%d mountable filesystems found, choose one with IMAGE@N:%s", len(ms), sb.String())
}

// SplitIndex splits "PATH@N" into PATH and N. Without a trailing "@N"
// (N a decimal number) it returns s and -1. Callers that accept paths
// which themselves end in "@digits" should try the whole string first.
func SplitIndex(s string) (path string, index int) {
	i := strings.LastIndexByte(s, '@')
	if i <= 0 || i == len(s)-1 {
		return s, -1
	}
	n, err := strconv.Atoi(s[i+1:])
	if err != nil || n < 0 || n > maxPartitions || strings.HasPrefix(s[i+1:], "+") {
		return s, -1
	}
	return s[:i], n
}
