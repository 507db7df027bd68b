//go:build !linux

package client

import "errors"

// setReadAhead: only Linux has per-mount readahead to raise.
func setReadAhead(mountpoint string, bytes int) error {
	return errors.New("not on this system")
}
