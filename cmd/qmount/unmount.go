package main

import (
	"errors"
	"fmt"

	"github.com/qmount/qmount/supervisor"
	"github.com/urfave/cli/v2"
)

func init() {
	commands = append(commands, &cli.Command{
		Name:      "unmount",
		Aliases:   []string{"umount"},
		Usage:     "unmount: flush, unmount in the guest, stop the VM, remove the mount point qmount created",
		ArgsUsage: "MOUNTPOINT|DISK",
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return errors.New("give one mount point or disk: qmount unmount MOUNTPOINT|DISK")
			}
			l, err := layout()
			if err != nil {
				return err
			}
			st, err := l.Find(c.Args().First())
			if err != nil {
				return err
			}
			if err := l.Unmount(c.Context, st); err != nil {
				return fmt.Errorf("unmounting %s: %w", st.Mountpoint, err)
			}
			return nil
		},
	})
}

// layout is the user's state directory.
func layout() (supervisor.Layout, error) {
	d, err := supervisor.StateDir()
	if err != nil {
		return supervisor.Layout{}, err
	}
	return supervisor.Layout{Root: d}, nil
}
