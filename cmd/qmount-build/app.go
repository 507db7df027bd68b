package main

import (
	"log/slog"
	"os"
	"runtime"

	"github.com/urfave/cli/v2"
)

func newApp() *cli.App {
	return &cli.App{
		Name:            "qmount-build",
		Usage:           "build qmount's guests (kernel, initramfs, manifest)",
		HideHelpCommand: true,
		ExitErrHandler:  func(*cli.Context, error) {}, // main prints the error
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "log debug detail"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "log only warnings"},
		},
		Commands: []*cli.Command{guestCommand()},
	}
}

func guestCommand() *cli.Command {
	return &cli.Command{
		Name:      "guest",
		Usage:     "build one guest for one architecture",
		UsageText: "qmount-build guest [--name linux] [--arch amd64] --out DIR",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "name", Value: "linux", Usage: "guest `NAME` (known: " + knownGuests() + ")"},
			&cli.StringFlag{Name: "arch", Value: runtime.GOARCH, Usage: "guest architecture, GOARCH style (amd64, arm64)"},
			&cli.StringFlag{Name: "out", Required: true, Usage: "output `DIR` (build/guests/NAME/ARCH)"},
			&cli.StringFlag{Name: "cache", Value: "build/cache", Usage: "download and unpack cache `DIR`"},
			&cli.StringFlag{Name: "init", Usage: "prebuilt static init `BINARY` (default: build ./cmd/qmount-init)"},
			&cli.StringFlag{Name: "kernel-package", Usage: "Debian kernel `PACKAGE` instead of the guest's"},
			&cli.StringSliceFlag{Name: "module", Usage: "extra kernel `MODULE` to ship (repeatable)"},
			&cli.StringSliceFlag{Name: "tool", Usage: "extra program `PATH` to ship with its libraries (repeatable)"},
			&cli.StringFlag{Name: "tool-root", Usage: "sysroot `DIR` the tools come from (default /)"},
			&cli.BoolFlag{Name: "force", Usage: "rebuild even when the inputs are unchanged"},
		},
		Action: func(c *cli.Context) error {
			g, err := lookupGuest(c.String("name"))
			if err != nil {
				return err
			}
			if p := c.String("kernel-package"); p != "" {
				g.KernelPackage = p
			}
			g.Modules = append(g.Modules, c.StringSlice("module")...)
			g.Tools = append(g.Tools, c.StringSlice("tool")...)
			_, err = build(c.Context, buildConfig{
				Guest:    g,
				Arch:     c.String("arch"),
				Out:      c.String("out"),
				Cache:    c.String("cache"),
				Init:     c.String("init"),
				ToolRoot: c.String("tool-root"),
				Force:    c.Bool("force"),
			}, logger(c))
			return err
		},
	}
}

func logger(c *cli.Context) *slog.Logger {
	level := slog.LevelInfo
	for _, l := range c.Lineage() {
		if l.Bool("verbose") {
			level = slog.LevelDebug
		}
		if l.Bool("quiet") {
			level = slog.LevelWarn
		}
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}
