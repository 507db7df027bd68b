package supervisor

import (
	"fmt"
	"os"
	"path/filepath"
)

func platformStateDir() (string, error) {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "qmount"), nil
	}
	h, err := homeDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(h, ".local", "state", "qmount"), nil
}

func platformMountRoot() (string, error) {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "qmount"), nil
	}
	uid := os.Getuid()
	if d := fmt.Sprintf("/run/user/%d", uid); isDir(d) {
		return filepath.Join(d, "qmount"), nil
	}
	if uid == 0 {
		return "/run/qmount", nil
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("qmount-%d", uid)), nil
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}
