package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	app := newApp()
	err := app.RunContext(ctx, withDefaultCommand(app, os.Args))
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// exitCode prints err (if it says anything) and returns the exit status:
// a cli.ExitCoder's own (qmount shell -c passes the command's), else 1.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		if msg := strings.TrimSpace(ec.Error()); msg != "" {
			fmt.Fprintf(stderr, "qmount: %s\n", oneLine(ec))
		}
		return ec.ExitCode()
	}
	fmt.Fprintf(stderr, "qmount: %s\n", oneLine(err))
	return 1
}

// oneLine keeps an error message to what a person reads on one line,
// unless it is a deliberate list (a choice of partitions).
func oneLine(err error) string {
	msg := strings.TrimSpace(err.Error())
	if strings.Contains(msg, "\n  @") { // a list to choose from
		return msg
	}
	first, _, _ := strings.Cut(msg, "\n")
	return first
}
