package supervisor

import (
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// detach lazily unmounts a (possibly stale) FUSE mount: it disappears from
// the namespace now and is released once no file on it is in use.
func detach(mountpoint string) error {
	var errs []error
	if unix.Geteuid() == 0 {
		err := unix.Unmount(mountpoint, unix.MNT_DETACH)
		if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil // EINVAL: not a mount point (any more)
		}
		errs = append(errs, fmt.Errorf("umount2: %w", err))
	}
	for _, tool := range []string{"fusermount3", "fusermount"} {
		out, err := exec.Command(tool, "-u", "-z", "--", mountpoint).CombinedOutput()
		if err == nil {
			return nil
		}
		if strings.Contains(string(out), "not mounted") || strings.Contains(string(out), "not found in") {
			return nil
		}
		errs = append(errs, fmt.Errorf("%s: %s", tool, strings.TrimSpace(string(out))))
	}
	return errors.Join(errs...)
}

// isMounted reports whether path is a mount point now (from
// /proc/self/mountinfo).
func isMounted(path string) bool {
	b, err := readFileSmall("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && unescapeMount(f[4]) == path {
			return true
		}
	}
	return false
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space...).
func unescapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
