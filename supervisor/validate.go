package supervisor

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxOptionsLen bounds -o.
const MaxOptionsLen = 4000

// ValidateOptions checks mount options as given to -o and returns them
// normalised (empty items dropped) and whether they ask for read-only.
func ValidateOptions(opts string) (string, bool, error) {
	if opts == "" {
		return "", false, nil
	}
	if len(opts) > MaxOptionsLen {
		return "", false, fmt.Errorf("mount options are too long (%d bytes, at most %d)", len(opts), MaxOptionsLen)
	}
	if !utf8.ValidString(opts) {
		return "", false, fmt.Errorf("mount options are not valid UTF-8")
	}
	for _, r := range opts {
		if r == 0 || r == '\n' || r == '\r' || (r < 0x20) || r == 0x7f {
			return "", false, fmt.Errorf("mount options contain a control character (%q)", r)
		}
	}
	var items []string
	ro := false
	for _, it := range strings.Split(opts, ",") {
		it = strings.TrimSpace(it)
		if it == "" {
			continue
		}
		if strings.ContainsAny(it, " \t") {
			return "", false, fmt.Errorf("bad mount option %q: no spaces allowed", it)
		}
		if strings.HasPrefix(it, "=") {
			return "", false, fmt.Errorf("bad mount option %q: no name", it)
		}
		switch it {
		case "ro":
			ro = true
		case "rw":
			ro = false
		}
		items = append(items, it)
	}
	if len(items) == 0 {
		return "", false, fmt.Errorf("mount options %q name no option", opts)
	}
	return strings.Join(items, ","), ro, nil
}

// wellKnownFS are filesystem types Linux mounts, whether or not a guest
// ships their driver.
var wellKnownFS = []string{
	"adfs", "affs", "bcachefs", "befs", "bfs", "btrfs", "cramfs", "efs", "erofs",
	"exfat", "ext2", "ext3", "ext4", "f2fs", "fat", "hfs", "hfsplus", "hpfs",
	"iso9660", "jffs2", "jfs", "minix", "msdos", "nilfs2", "ntfs", "ntfs3",
	"ocfs2", "omfs", "qnx4", "qnx6", "reiserfs", "romfs", "squashfs", "sysv",
	"udf", "ufs", "vfat", "vxfs", "xfs", "zfs", "zonefs",
}

// ValidateFSType checks a -t value: a name Linux knows, or one the guest
// ships a module for (guestModules).
func ValidateFSType(t string, guestModules []string) error {
	if t == "" {
		return nil
	}
	if len(t) > 32 || strings.IndexFunc(t, func(r rune) bool {
		return !(r < 0x80 && (unicode.IsLower(r) || unicode.IsDigit(r) || r == '_' || r == '.' || r == '-'))
	}) >= 0 {
		return fmt.Errorf("unknown filesystem type %q", t)
	}
	if slices.Contains(wellKnownFS, t) || slices.Contains(guestModules, t) {
		return nil
	}
	return fmt.Errorf("unknown filesystem type %q (known: %s)", t, strings.Join(wellKnownFS, ", "))
}

// MountName turns a filesystem label into a directory name: "/" and
// control characters become "_", surrounding spaces and dots are trimmed,
// non-ASCII letters are kept (they are valid in file names) unless the
// label is not valid UTF-8. It returns fallback's base name (without an
// image extension) when nothing usable remains.
func MountName(label, fallback string) string {
	name := sanitizeName(label)
	if name == "" {
		base := filepath.Base(fallback)
		if ext := filepath.Ext(base); ext != "" && ext != base {
			base = strings.TrimSuffix(base, ext)
		}
		name = sanitizeName(base)
	}
	if name == "" {
		name = "disk"
	}
	return name
}

func sanitizeName(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "_")
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '/' || r == '\\' || r == ':':
			b.WriteByte('_')
		case !unicode.IsPrint(r):
			b.WriteByte('_')
		default:
			b.WriteRune(r)
		}
	}
	out := strings.Trim(b.String(), " .")
	for strings.HasPrefix(out, "-") {
		out = strings.TrimPrefix(out, "-")
	}
	if len(out) > 200 {
		out = strings.ToValidUTF8(out[:200], "")
	}
	if strings.Trim(out, "_") == "" {
		return ""
	}
	return out
}

// uniqueName returns name, or "name 2", "name 3"... the first that taken
// does not report as taken.
func uniqueName(name string, taken func(string) bool) string {
	if !taken(name) {
		return name
	}
	for i := 2; ; i++ {
		n := name + " " + strconv.Itoa(i)
		if !taken(n) {
			return n
		}
	}
}
