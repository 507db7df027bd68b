package main

import (
	"errors"
	"fmt"

	"github.com/qmount/qmount/supervisor"
	"github.com/urfave/cli/v2"
)

func init() {
	commands = append(commands, &cli.Command{
		Name:      "stop",
		Usage:     "end mounts whose unmount did not finish; clean stale state and stale FUSE mounts",
		ArgsUsage: "MOUNTPOINT|DISK | --all",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "all", Usage: "stop every mount"},
			&cli.BoolFlag{Name: "force", Usage: "do not ask for a clean unmount first; detach busy mount points"},
		},
		Action: func(c *cli.Context) error {
			l, err := layout()
			if err != nil {
				return err
			}
			var targets []*supervisor.State
			switch {
			case c.Bool("all") && c.NArg() == 0:
				targets, err = l.List()
				if err != nil {
					return err
				}
			case !c.Bool("all") && c.NArg() == 1:
				st, err := l.Find(c.Args().First())
				if err != nil {
					return err
				}
				targets = []*supervisor.State{st}
			default:
				return errors.New("give one mount point or --all: qmount stop [--force] MOUNTPOINT|--all")
			}
			var errs []error
			for _, st := range targets {
				if err := l.Stop(c.Context, st, c.Bool("force")); err != nil {
					errs = append(errs, fmt.Errorf("stopping %s: %w", st.Mountpoint, err))
				}
			}
			return errors.Join(errs...)
		},
	})
}
