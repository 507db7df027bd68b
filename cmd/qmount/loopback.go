package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/qmount/qmount/p9server"
	"github.com/qmount/qmount/supervisor"
	"github.com/urfave/cli/v2"
)

func init() {
	commands = append(commands, &cli.Command{
		Name:      "loopback",
		Usage:     "serve a directory through the 9P server and the FUSE client in one process (no VM)",
		ArgsUsage: "DIR MOUNTPOINT",
		Description: `Mounts DIR at MOUNTPOINT through qmount's own data path (p9server and the
9P/FUSE client over a socket pair) without a VM: the way to test and measure
the data path alone. Runs until Ctrl-C, SIGTERM or umount MOUNTPOINT.`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "ro", Usage: "serve read-only"},
			&cli.BoolFlag{Name: "allow-other", Usage: "let users other than the mounting one use the mount (FUSE allow_other; non-root needs user_allow_other in /etc/fuse.conf), e.g. for conformance suites that switch users"},
			&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "log what happens to stderr"},
		},
		Action: loopbackAction,
	})
}

func loopbackAction(c *cli.Context) error {
	if c.NArg() != 2 {
		return errors.New("give a directory and a mount point: qmount loopback DIR MOUNTPOINT")
	}
	dir, mp := c.Args().Get(0), c.Args().Get(1)
	if fi, err := os.Stat(dir); err != nil {
		return fmt.Errorf("%s: %w", dir, errors.Unwrap(err))
	} else if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if fi, err := os.Stat(mp); err != nil {
		return fmt.Errorf("mount point %s: %w", mp, errors.Unwrap(err))
	} else if !fi.IsDir() {
		return fmt.Errorf("mount point %s is not a directory", mp)
	}
	mp, _ = filepath.Abs(mp)
	log := logger(c)
	ro := c.Bool("ro")

	var sopts []p9server.Option
	sopts = append(sopts, p9server.WithLogger(log.With("from", "p9server")))
	if ro {
		sopts = append(sopts, p9server.WithReadOnly())
	}
	srv, err := p9server.New(dir, sopts...)
	if err != nil {
		return err
	}
	defer srv.Close()

	serverEnd, clientEnd, err := socketPair()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, serverEnd) }()

	abs, _ := filepath.Abs(dir)
	m, err := mountFUSE(c.Context, clientEnd, mp, supervisor.FUSEOptions{
		ReadOnly: ro, FSName: abs, Owner: supervisor.Owner{Mode: supervisor.OwnerKeep},
		AllowOther: c.Bool("allow-other"), Logger: log.With("from", "client"),
	})
	if err != nil {
		clientEnd.Close()
		cancel()
		<-served
		return fmt.Errorf("mounting %s: %w", mp, err)
	}
	log.Info("serving", "dir", abs, "mountpoint", mp)

	unmounted := make(chan struct{})
	go func() { m.Wait(); close(unmounted) }()
	select {
	case <-unmounted:
	case <-c.Context.Done():
		if err := m.Unmount(); err != nil {
			log.Warn("unmounting; detaching", "err", err)
			if derr := supervisor.Detach(mp); derr != nil {
				return fmt.Errorf("unmounting %s: %w", mp, derr)
			}
		}
		<-unmounted
	}
	cancel()
	<-served
	return nil
}

// plainRWC hides everything but Read, Write and Close.
type plainRWC struct{ f *os.File }

func (p plainRWC) Read(b []byte) (int, error)  { return p.f.Read(b) }
func (p plainRWC) Write(b []byte) (int, error) { return p.f.Write(b) }
func (p plainRWC) Close() error                { return p.f.Close() }
