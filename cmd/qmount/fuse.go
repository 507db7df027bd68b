package main

import (
	"context"
	"io"
	"log/slog"

	"github.com/qmount/qmount/client"
	"github.com/qmount/qmount/client/ninep"
	"github.com/qmount/qmount/supervisor"
)

// fuseMount is what the supervisor needs of a client mount.
type fuseMount interface {
	Wait() error
	Unmount() error
	DirectBytes() int64
	Client() *ninep.Client
}

type fuseAdapter struct {
	m   fuseMount
	log *slog.Logger
}

// Wait waits for the mount to end, then logs how much file data was
// read from the disk on the host (FUSEOptions.Direct).
func (a fuseAdapter) Wait() {
	a.m.Wait()
	st := a.m.Client().Stats()
	a.log.Info("FUSE mount ended", "direct_read_bytes", a.m.DirectBytes(), "9p_requests", st.Total,
		"twalk", st.ByType["Twalk"], "txattrwalk", st.ByType["Txattrwalk"], "tread", st.ByType["Tread"])
}

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
	if d := o.Direct; d != nil {
		opts = append(opts, client.WithDirectRead(io.NewSectionReader(d.File, d.Offset, d.Size), d.Size))
	}
	m, err := client.Mount(ctx, conn, mountpoint, opts...)
	if err != nil {
		return nil, err
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return fuseAdapter{m, log}, nil
}
