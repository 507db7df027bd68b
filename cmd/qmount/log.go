package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/urfave/cli/v2"
)

func init() {
	commands = append(commands, &cli.Command{
		Name:      "log",
		Usage:     "show a mount's supervisor log and guest console (the most recent mount's by default)",
		ArgsUsage: "[MOUNTPOINT|DISK]",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing the supervisor log as it grows, until the mount ends"},
		},
		Action: func(c *cli.Context) error {
			l, err := layout()
			if err != nil {
				return err
			}
			var id string
			switch c.NArg() {
			case 0:
				id, err = l.LatestLog()
			case 1:
				st, ferr := l.Find(c.Args().First())
				if ferr != nil {
					return ferr
				}
				id = st.ID
			default:
				return errors.New("give at most one mount point: qmount log [-f] [MOUNTPOINT]")
			}
			if err != nil {
				return err
			}
			logPath, console := l.LogPaths(id)
			if b, err := os.ReadFile(console); err == nil && len(b) > 0 {
				fmt.Printf("==> guest console (%s) <==\n", console)
				os.Stdout.Write(b)
				if b[len(b)-1] != '\n' {
					fmt.Println()
				}
				fmt.Println()
			}
			fmt.Printf("==> supervisor log (%s) <==\n", logPath)
			f, err := os.Open(logPath)
			if err != nil {
				return fmt.Errorf("reading the log: %w", err)
			}
			defer f.Close()
			if _, err := io.Copy(os.Stdout, f); err != nil {
				return err
			}
			if c.Bool("follow") {
				return follow(c.Context, f, os.Stdout, func() bool { return l.Active(id) })
			}
			return nil
		},
	})
}

// follow copies what is appended to f until ctx is done (Ctrl-C) or the
// mount has ended (active reports false) and everything is copied.
func follow(ctx context.Context, f *os.File, w io.Writer, active func() bool) error {
	buf := make([]byte, 64<<10)
	for {
		live := active()
		n, err := f.Read(buf)
		if n > 0 {
			w.Write(buf[:n])
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if !live {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}
