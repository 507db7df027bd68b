package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/qmount/qmount/guests"
	"github.com/qmount/qmount/kernels"

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
		Commands: []*cli.Command{guestCommand(), guestsCommand(), kernelCommand()},
	}
}

func guestCommand() *cli.Command {
	return &cli.Command{
		Name:      "guest",
		Usage:     "build one guest for one architecture",
		UsageText: "qmount-build guest [--name linux] [--arch amd64] [--defs DIR] --out DIR",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "name", Value: guests.Default, Usage: "guest `NAME` (a guests/NAME/guest.json, shipped or in --defs)"},
			&cli.StringFlag{Name: "arch", Value: runtime.GOARCH, Usage: "guest architecture, GOARCH style (amd64, arm64)"},
			&cli.StringFlag{Name: "out", Required: true, Usage: "output `DIR` (build/guests/NAME/ARCH)"},
			&cli.StringFlag{Name: "kernel-package", Usage: "Debian kernel `PACKAGE` instead of the guest's"},
			&cli.StringSliceFlag{Name: "module", Usage: "extra kernel `MODULE` to ship (repeatable)"},
			&cli.StringSliceFlag{Name: "tool", Usage: "extra program `PATH` to ship with its libraries (repeatable)"},
			&cli.BoolFlag{Name: "force", Usage: "rebuild even when the inputs are unchanged"},
		}, commonFlags()...),
		Action: func(c *cli.Context) error {
			d, err := lookupGuest(c.String("name"), c.StringSlice("defs")...)
			if err != nil {
				return err
			}
			cfg := configFrom(c, d, c.String("arch"), c.String("out"))
			cfg.KernelPackage = c.String("kernel-package")
			cfg.ExtraModules = c.StringSlice("module")
			cfg.ExtraTools = c.StringSlice("tool")
			cfg.Force = c.Bool("force")
			_, err = build(c.Context, cfg, logger(c))
			return err
		},
	}
}

// commonFlags are the flags of every building command.
func commonFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "defs", Usage: "extra guest definition `DIR` holding NAME/guest.json (repeatable; also $" + guests.EnvDefs + ")"},
		&cli.StringFlag{Name: "cache", Value: "build/cache", Usage: "download, source and kernel build cache `DIR`"},
		&cli.StringFlag{Name: "init", Usage: "prebuilt static init `BINARY` (default: build ./cmd/qmount-init)"},
		&cli.StringFlag{Name: "tool-root", Usage: "sysroot `DIR` the tools come from (default /)"},
		&cli.IntFlag{Name: "jobs", Aliases: []string{"j"}, Usage: "parallel jobs of a kernel compile (default: CPUs)"},
		&cli.IntFlag{Name: "nice", Value: 10, Usage: "niceness of a kernel compile"},
	}
}

func configFrom(c *cli.Context, d *guests.Def, arch, out string) buildConfig {
	return buildConfig{
		Def: d, Arch: arch, Out: out,
		Cache: c.String("cache"), Init: c.String("init"), ToolRoot: c.String("tool-root"),
		Jobs: c.Int("jobs"), Nice: c.Int("nice"),
	}
}

func guestsCommand() *cli.Command {
	return &cli.Command{
		Name:      "guests",
		Usage:     "build every defined guest whose kernel needs no compile, for each architecture",
		UsageText: "qmount-build guests [--arch amd64 --arch arm64] [--compiled] [--out build/guests]",
		Flags: append([]cli.Flag{
			&cli.StringSliceFlag{Name: "arch", Value: cli.NewStringSlice(runtime.GOARCH), Usage: "guest `ARCH`itecture (repeatable, or comma separated)"},
			&cli.StringFlag{Name: "out", Value: "build/guests", Usage: "output root `DIR`: each guest goes to DIR/NAME/ARCH"},
			&cli.BoolFlag{Name: "compiled", Usage: "also build guests whose kernel is compiled from source (slow)"},
		}, commonFlags()...),
		Action: func(c *cli.Context) error {
			defs, err := guests.LoadDefs(append(guests.DefDirs(), c.StringSlice("defs")...)...)
			if err != nil {
				return err
			}
			log := logger(c)
			var arches []string
			for _, a := range c.StringSlice("arch") {
				arches = append(arches, strings.Split(a, ",")...)
			}
			for _, arch := range arches {
				for _, d := range defs {
					ks, ok := d.Kernel[arch]
					if !ok {
						continue
					}
					if ks.Compiled() && !c.Bool("compiled") {
						log.Info("skipping a guest whose kernel is compiled (make guest GUEST=NAME builds it)", "guest", d.Name, "arch", arch)
						continue
					}
					if _, err := build(c.Context, configFrom(c, d, arch, filepath.Join(c.String("out"), d.Name, arch)), log); err != nil {
						return fmt.Errorf("guest %s for %s: %w", d.Name, arch, err)
					}
				}
			}
			return nil
		},
	}
}

func kernelCommand() *cli.Command {
	return &cli.Command{
		Name:      "kernel",
		Usage:     "compile a kernel from Debian's linux-source package with config fragments",
		UsageText: "qmount-build kernel --config kernels/configs/mini.config [--source linux-source-6.1] [--arch amd64]",
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "config", Required: true, Usage: "config fragment `FILE`, merged on tinyconfig (repeatable; X-ARCH.config next to it is added)"},
			&cli.StringFlag{Name: "source", Value: "linux-source-6.1", Usage: "Debian kernel source `PACKAGE`"},
			&cli.StringFlag{Name: "arch", Value: runtime.GOARCH, Usage: "kernel architecture, GOARCH style"},
			&cli.StringFlag{Name: "name", Usage: "build `NAME` (default: the first fragment's base name)"},
			&cli.StringFlag{Name: "cache", Value: "build/cache", Usage: "source and build cache `DIR`"},
			&cli.IntFlag{Name: "jobs", Aliases: []string{"j"}, Usage: "parallel jobs (default: CPUs)"},
			&cli.IntFlag{Name: "nice", Value: 10, Usage: "niceness of the compile"},
		},
		Action: func(c *cli.Context) error {
			confs := c.StringSlice("config")
			name := c.String("name")
			if name == "" {
				name = strings.TrimSuffix(filepath.Base(confs[0]), ".config")
			}
			k, err := kernels.Build(c.Context, kernels.BuildConfig{
				Name: name, Arch: c.String("arch"), Source: c.String("source"), Configs: confs,
				CacheDir: c.String("cache"), Jobs: c.Int("jobs"), Nice: c.Int("nice"),
			}, kernels.WithLogger(logger(c)))
			if err != nil {
				return err
			}
			fmt.Printf("%s\t%s\t%s\n", k.Release, k.Image, k.Config)
			return nil
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
