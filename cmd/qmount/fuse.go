package main

import (
	"context"
	"io"

	"github.com/qmount/qmount/client"
	"github.com/qmount/qmount/supervisor"
)

// fuseMount is what the supervisor needs of a client mount.
type fuseMount interface {
	Wait() error
	Unmount() error
}

type fuseAdapter struct{ m fuseMount }

func (a fuseAdapter) Wait()          { a.m.Wait() }
func (a fuseAdapter) Unmount() error { return a.m.Unmount() }

// mountFUSE serves the 9P stream conn at mountpoint with the client
// package (supervisor.MountFunc).
func mountFUSE(ctx context.Context, conn io.ReadWriteCloser, mountpoint string, o supervisor.FUSEOptions) (supervisor.FUSE, error) {
	opts := []client.Option{client.WithFsName(o.FSName)}
	if o.Logger != nil {
		opts = append(opts, client.WithLogger(o.Logger))
	}
	if o.ReadOnly {
		opts = append(opts, client.WithReadOnly())
	}
	if o.AllowOther {
		opts = append(opts, client.WithAllowOther())
	}
	if m := o.Owner.Mapper(); m != nil {
		opts = append(opts, client.WithIDMapper(m))
	}
	m, err := client.Mount(ctx, conn, mountpoint, opts...)
	if err != nil {
		return nil, err
	}
	return fuseAdapter{m}, nil
}
