//go:build !linux

package agent

import (
	"errors"
	"io"
	"os/exec"
)

func startPTY(cmd *exec.Cmd, rows, cols int, out io.Writer, ex *execution) (func(), error) {
	return nil, errors.New("no pseudo-terminals on this platform")
}

func isFUSEMount(dir string) bool { return false }

func setBlockReadOnly(dev string) error { return nil }
