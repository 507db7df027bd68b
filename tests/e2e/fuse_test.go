//go:build linux

package e2e

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/qmount/qmount/client"
)

// mountFUSE mounts the 9P stream conn at mnt with the real client and
// returns the function that unmounts it and waits for the server to end.
// t may be nil (in the child process of TestHostKilled).
func mountFUSE(ctx context.Context, t testing.TB, conn io.ReadWriteCloser, mnt string, readOnly bool) (func() error, error) {
	opts := []client.Option{}
	if t != nil {
		opts = append(opts, client.WithLogger(slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	}
	if readOnly {
		opts = append(opts, client.WithReadOnly())
	}
	m, err := client.Mount(ctx, conn, mnt, opts...)
	if err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- m.Wait() }()
	return func() error {
		if err := m.Unmount(); err != nil {
			return err
		}
		select {
		case <-done:
		case <-time.After(30 * time.Second):
		}
		return nil
	}, nil
}
