package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	app := newApp()
	err := app.RunContext(ctx, withDefaultCommand(app, os.Args))
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "qmount: %s\n", oneLine(err))
		os.Exit(1)
	}
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
