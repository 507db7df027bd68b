package supervisor

import "path/filepath"

func platformStateDir() (string, error) {
	h, err := homeDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(h, "Library", "Application Support", "qmount"), nil
}

func platformMountRoot() (string, error) { return "/Volumes", nil }
