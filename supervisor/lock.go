package supervisor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ErrDiskBusy means another mount holds a conflicting lock on the disk.
var ErrDiskBusy = errors.New("disk busy")

// diskLock is a flock held on a lock file for one disk (and partition).
type diskLock struct {
	f    *os.File
	path string
}

// lockKey names the lock of a disk: block and character devices by their
// device number (so every path to one device shares the lock), files by
// the device and inode they live on.
func lockKey(disk string, partition int) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(disk, &st); err != nil {
		return "", fmt.Errorf("locking %s: %w", disk, err)
	}
	var key string
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFBLK, unix.S_IFCHR:
		key = fmt.Sprintf("dev-%d-%d", unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)))
	default:
		key = fmt.Sprintf("file-%d-%d", uint64(st.Dev), uint64(st.Ino))
	}
	return fmt.Sprintf("%s-p%d", key, partition), nil
}

// lockDisk takes the lock of disk: shared for read-only mounts, exclusive
// otherwise. It never waits: a conflicting lock gives ErrDiskBusy.
func (l Layout) lockDisk(disk string, partition int, shared bool) (*diskLock, error) {
	key, err := lockKey(disk, partition)
	if err != nil {
		return nil, err
	}
	if err := mkdirPrivate(l.locksDir()); err != nil {
		return nil, err
	}
	path := filepath.Join(l.locksDir(), key+".lock")
	how := unix.LOCK_EX
	if shared {
		how = unix.LOCK_SH
	}
	for range 10 {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("opening lock file: %w", err)
		}
		if err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, ErrDiskBusy
			}
			return nil, fmt.Errorf("locking %s: %w", disk, err)
		}
		// The file may have been unlinked by a releaser between our open
		// and flock: only a lock on the file at path counts.
		var a, b unix.Stat_t
		if unix.Fstat(int(f.Fd()), &a) == nil && unix.Stat(path, &b) == nil && a.Ino == b.Ino && a.Dev == b.Dev {
			return &diskLock{f: f, path: path}, nil
		}
		f.Close()
	}
	return nil, fmt.Errorf("locking %s: lock file keeps changing", disk)
}

// release drops the lock, removing the lock file when nobody else holds it.
func (d *diskLock) release() error {
	if d == nil || d.f == nil {
		return nil
	}
	if unix.Flock(int(d.f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
		os.Remove(d.path)
	}
	err := d.f.Close()
	d.f = nil
	return err
}
