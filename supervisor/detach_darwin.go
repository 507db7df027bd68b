package supervisor

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"
)

// detach forcibly unmounts a (possibly stale) FUSE mount.
func detach(mountpoint string) error {
	err := unix.Unmount(mountpoint, unix.MNT_FORCE)
	if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	out, err2 := exec.Command("diskutil", "unmount", "force", mountpoint).CombinedOutput()
	if err2 == nil {
		return nil
	}
	return fmt.Errorf("unmounting %s: %w; diskutil: %s", mountpoint, err, strings.TrimSpace(string(out)))
}

// isMounted reports whether path is a mount point now.
func isMounted(path string) bool {
	var st, parent unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return true // a dead FUSE mount fails stat
	}
	if unix.Stat(path+"/..", &parent) != nil {
		return false
	}
	return st.Dev != parent.Dev
}
