package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/qmount/qmount/guests"
	"github.com/qmount/qmount/internal/secret"
	"github.com/qmount/qmount/internal/wire"
	"github.com/qmount/qmount/probe"
	"github.com/qmount/qmount/session"
	"github.com/qmount/qmount/vmm"
	"github.com/urfave/cli/v2"
)

// shellGuest is the guest `qmount shell` boots by default: the one with
// the storage tools and busybox.
const shellGuest = "linux-storage"

func init() {
	commands = append(commands, &cli.Command{
		Name:      "shell",
		Usage:     "boot a guest with the disks attached and open a shell in it (or run -c CMD)",
		ArgsUsage: "DISK...",
		Description: "The disks are /dev/disk/qmount/qmount0, qmount1... in the guest (also /dev/vda...),\n" +
			"with its tools: cryptsetup, lvm, mdadm, btrfs, ntfs-3g, mke2fs and busybox.\n" +
			"Exits with the command's status. The guest console log is kept; its path is printed on failure.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "guest", Value: shellGuest, Usage: "guest `NAME`"},
			&cli.BoolFlag{Name: "ro", Usage: "attach the disks read-only"},
			&cli.StringFlag{Name: "command", Aliases: []string{"c"}, Usage: "run `CMD` with sh -c instead of an interactive shell"},
			&cli.IntFlag{Name: "memory", Value: 512, Usage: "guest memory in `MiB`"},
			&cli.StringFlag{Name: "arch", Usage: "guest architecture (default: the host's)", Hidden: true},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return errors.New("give at least one disk: qmount shell [--ro] [-c CMD] DISK...")
			}
			code, err := runShell(c.Context, shellOptions{
				guest: c.String("guest"), readOnly: c.Bool("ro"), command: c.String("command"),
				memory: c.Int("memory"), disks: c.Args().Slice(), arch: c.String("arch"),
			})
			if err != nil {
				return err
			}
			if code != 0 {
				return cli.Exit("", code)
			}
			return nil
		},
	})
}

type shellOptions struct {
	guest, command, arch string
	readOnly             bool
	memory               int
	disks                []string
}

func runShell(ctx context.Context, o shellOptions) (int, error) {
	g, err := guests.Find(o.guest, o.arch)
	if err != nil {
		return -1, err
	}
	log := slog.New(slog.DiscardHandler)
	drv, err := newDriver(log)
	if err != nil {
		return -1, err
	}
	logDir, err := os.MkdirTemp("", "qmount-shell-")
	if err != nil {
		return -1, err
	}
	console := filepath.Join(logDir, "console.log")
	cfg := session.Config{
		Driver: drv,
		Machine: vmm.Config{
			Kernel: g.Kernel, Initrd: g.Initrd, Arch: g.Arch,
			MemoryMiB: o.memory, CPUs: 1, ConsoleLog: console, StateDir: logDir,
		},
		Logger: log,
	}
	var serials []string
	for i, d := range o.disks {
		abs, err := filepath.Abs(d)
		if err != nil {
			return -1, err
		}
		format, err := imageFormat(abs)
		if err != nil {
			return -1, err
		}
		serial := wire.DiskSerial(i)
		cfg.Machine.Disks = append(cfg.Machine.Disks, vmm.Disk{Path: abs, Format: format, ReadOnly: o.readOnly, Serial: serial})
		serials = append(serials, serial)
	}
	req := wire.ExecRequest{Args: []string{"sh", "-c", o.command}, Disks: serials}
	var stdin io.Reader = os.Stdin
	if o.command == "" {
		if !secret.IsTerminal(os.Stdin) {
			return -1, errors.New("an interactive shell needs a terminal; use -c CMD")
		}
		rows, cols := secret.Size(os.Stdin)
		req = wire.ExecRequest{Args: []string{"sh", "-l"}, TTY: true, Rows: rows, Cols: cols, Disks: serials}
		restore, err := secret.MakeRaw(os.Stdin)
		if err != nil {
			return -1, fmt.Errorf("putting the terminal in raw mode: %w", err)
		}
		defer restore()
	} else if secret.IsTerminal(os.Stdin) {
		stdin = nil // -c on a terminal: the command reads nothing
	}
	code, err := session.Exec(ctx, cfg, req, stdin, os.Stdout)
	if err != nil {
		return -1, fmt.Errorf("%w\n(guest console log: %s)", err, console)
	}
	os.RemoveAll(logDir)
	return code, nil
}

// imageFormat detects a disk image's format by its content.
func imageFormat(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	switch format := probe.ImageFormat(f); format {
	case "qcow":
		return "", fmt.Errorf("%s: qcow version 1 images are not supported; convert with qemu-img convert -O qcow2", path)
	default:
		return format, nil
	}
}
