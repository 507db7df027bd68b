package main

import (
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"
)

// commands are registered by each command's file.
var commands []*cli.Command

func newApp() *cli.App {
	return &cli.App{
		Name:                 "qmount",
		Usage:                "mount any filesystem Linux can read, through a tiny VM",
		UsageText:            "qmount [mount] [options] DISK [MOUNTPOINT]\n   qmount COMMAND [options] [arguments...]",
		Commands:             commands,
		EnableBashCompletion: true,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "log what happens to stderr"},
		},
		HideHelpCommand: true,
		ExitErrHandler:  func(*cli.Context, error) {}, // main prints the error
	}
}

// defaultCommand is run when the first argument names no command, so that
// `qmount DISK MOUNTPOINT` and `qmount --ro DISK` mean `qmount mount ...`.
const defaultCommand = "mount"

// withDefaultCommand inserts defaultCommand into args (os.Args) when the
// first argument after the global flags is not a command. urfave/cli's
// DefaultCommand only applies it to arguments that are not flags, so
// `qmount --ro DISK` would fail there.
func withDefaultCommand(app *cli.App, args []string) []string {
	i := 1
	for i < len(args) && (args[i] == "-v" || args[i] == "--verbose" || args[i] == "-verbose") {
		i++
	}
	if i >= len(args) {
		return args
	}
	first := args[i]
	switch first {
	case "-h", "--help", "-help", "help", "--version", "--generate-bash-completion":
		return args
	}
	if first == defaultCommand {
		return append(append([]string{}, args[:i+1]...), flagsFirst(mountCommand(app), args[i+1:])...)
	}
	for _, c := range app.Commands {
		if c.Name == first || slices.Contains(c.Aliases, first) {
			return args
		}
	}
	if strings.HasPrefix(first, "-") && findFlag(mountCommand(app), first) == nil {
		return args // an unknown global flag: let cli report it
	}
	out := append([]string{}, args[:i]...)
	out = append(out, defaultCommand)
	return append(out, flagsFirst(mountCommand(app), args[i:])...)
}

func mountCommand(app *cli.App) *cli.Command {
	for _, c := range app.Commands {
		if c.Name == defaultCommand {
			return c
		}
	}
	return nil
}

// findFlag returns the flag of cmd that arg ("-o", "--ro", "--type=x")
// names, or nil.
func findFlag(cmd *cli.Command, arg string) cli.Flag {
	if cmd == nil || !strings.HasPrefix(arg, "-") {
		return nil
	}
	name, _, _ := strings.Cut(strings.TrimLeft(arg, "-"), "=")
	for _, f := range cmd.Flags {
		if slices.Contains(f.Names(), name) {
			return f
		}
	}
	return nil
}

// flagsFirst moves cmd's flags (with their values) in front of the
// positional arguments, so that `qmount DISK MNT --ro` works like `qmount
// --ro DISK MNT` (urfave/cli stops parsing flags at the first argument).
// "--" ends the flags.
func flagsFirst(cmd *cli.Command, args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i:]...)
			break
		}
		f := findFlag(cmd, a)
		if f == nil {
			pos = append(pos, a)
			continue
		}
		flags = append(flags, a)
		if _, isBool := f.(*cli.BoolFlag); !isBool && !strings.Contains(a, "=") && i+1 < len(args) {
			i++
			flags = append(flags, args[i])
		}
	}
	return append(flags, pos...)
}

// verbose reports whether -v was given at any level.
func verbose(c *cli.Context) bool {
	for _, l := range c.Lineage() {
		if l.Bool("verbose") {
			return true
		}
	}
	return false
}

// logger returns the logger the command's flags ask for.
func logger(c *cli.Context) *slog.Logger {
	if verbose(c) {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
