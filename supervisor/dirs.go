package supervisor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Environment variables that move qmount's directories (tests use them to
// stay isolated; users may too).
const (
	// EnvStateDir overrides StateDir.
	EnvStateDir = "QMOUNT_STATE_DIR"
	// EnvMountDir overrides MountRoot, the parent of mount points qmount
	// creates when none is given.
	EnvMountDir = "QMOUNT_MOUNT_DIR"
)

// StateDir returns the per-user state directory (see the package
// documentation). It does not create it.
func StateDir() (string, error) {
	if d := os.Getenv(EnvStateDir); d != "" {
		return filepath.Abs(d)
	}
	d, err := platformStateDir()
	if err != nil {
		return "", fmt.Errorf("finding the state directory: %w", err)
	}
	return d, nil
}

// MountRoot returns the directory under which qmount creates mount points
// when none is given: $QMOUNT_MOUNT_DIR, else the platform's default
// (Linux: $XDG_RUNTIME_DIR/qmount, else /run/user/UID/qmount when
// /run/user/UID exists, else /run/qmount for root and
// $TMPDIR/qmount-UID for other users; macOS: /Volumes).
func MountRoot() (string, error) {
	if d := os.Getenv(EnvMountDir); d != "" {
		return filepath.Abs(d)
	}
	return platformMountRoot()
}

func homeDir() (string, error) {
	h, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	if h == "" {
		return "", errors.New("no home directory")
	}
	return h, nil
}

// mkdirPrivate creates dir (and its parents) readable only by the user.
func mkdirPrivate(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	return nil
}
