package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/hugelgupf/p9/p9"

	"github.com/qmount/qmount/client/ninep"
)

// NewRoot attaches to the server on c and returns the root node of the
// file system, for fs.Mount or fs.NewNodeFS.
func NewRoot(ctx context.Context, c *ninep.Client, opts ...Option) (fs.InodeEmbedder, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	return newRoot(ctx, c, cfg)
}

func newRoot(ctx context.Context, c *ninep.Client, cfg config) (*node, error) {
	fid, qid, err := c.Attach(ctx, "root", "", 0)
	if err != nil {
		return nil, fmt.Errorf("attaching: %w", err)
	}
	_, valid, attr, err := c.Getattr(ctx, fid, p9.AttrMaskAll)
	if err != nil {
		c.Clunk(fid)
		return nil, fmt.Errorf("reading root attributes: %w", err)
	}
	if !valid.Mode || !attr.Mode.IsDir() {
		c.Clunk(fid)
		return nil, fmt.Errorf("root is not a directory: %w", syscall.ENOTDIR)
	}
	f := &fsys{c: c, log: cfg.logger, cfg: cfg, inos: make(map[uint64]*inoState)}
	f.pre.init()
	root := &node{fsys: f, fids: &fidSlot{ref: newFidRef(c, fid)}}
	root.setAttr(qid, valid, attr)
	f.inos[qid.Path] = &inoState{}
	return root, nil
}

// Mounted is a mounted file system.
type Mounted struct {
	server *fuse.Server
	client *ninep.Client
	root   *node
}

// Mount speaks 9P2000.L on conn and mounts the server's tree at
// mountpoint. The mount owns conn. Call Wait to serve until unmounted.
func Mount(ctx context.Context, conn io.ReadWriteCloser, mountpoint string, opts ...Option) (*Mounted, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	nopts := []ninep.Option{ninep.WithLogger(cfg.logger)}
	if cfg.msize != 0 {
		nopts = append(nopts, ninep.WithMsize(cfg.msize))
	}
	c, err := ninep.New(ctx, conn, nopts...)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("starting 9p client: %w", err)
	}
	root, err := newRoot(ctx, c, cfg)
	if err != nil {
		c.Close()
		return nil, err
	}
	fopts := fuseOptions(&cfg)
	// The root's inode number is its QID path, like every other node's,
	// so stat of the mount point shows the guest's real root inode.
	fopts.RootStableAttr = &fs.StableAttr{Ino: root.qid.Path, Mode: syscall.S_IFDIR}
	server, err := fs.Mount(mountpoint, root, fopts)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("mounting %s: %w", mountpoint, err)
	}
	if err := setReadAhead(mountpoint, DefaultMaxReadAhead); err != nil {
		cfg.logger.Debug("kernel readahead left at its default", "err", err)
	}
	return &Mounted{server: server, client: c, root: root}, nil
}

func fuseOptions(cfg *config) *fs.Options {
	o := &fs.Options{
		EntryTimeout:    &cfg.entryTimeout,
		AttrTimeout:     &cfg.attrTimeout,
		NegativeTimeout: &cfg.negativeTimeout,
		NullPermissions: true,
		MountOptions: fuse.MountOptions{
			FsName:               cfg.fsName,
			Name:                 cfg.subtype,
			MaxWrite:             DefaultMaxWrite,
			MaxReadAhead:         DefaultMaxReadAhead,
			MaxBackground:        DefaultMaxBackground,
			EnableLocks:          cfg.serverLocks,
			EnableSymlinkCaching: true,
			AllowOther:           cfg.allowOther,
			Debug:                cfg.debug,
			DirectMount:          true,
			// Reads answer with bytes from 9P replies: splicing them
			// through a pipe only adds a copy (and fails for 1 MiB).
			DisableSplice: true,
			// Attributes with the first readdir request of a directory
			// only, then with later ones only if the kernel saw lookups
			// in it: find needs none; the lookups of ls -l are answered
			// from the directory's listing (node.listBatch).
			ExtraCapabilities: fuse.CAP_READDIRPLUS_AUTO,
			Options:           []string{"default_permissions"},
		},
	}
	if cfg.readOnly {
		o.MountOptions.Options = append(o.MountOptions.Options, "ro")
	}
	if cfg.debug {
		o.MountOptions.Logger = log.New(slogWriter{cfg.logger}, "", 0)
	}
	return o
}

type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Debug(string(p))
	return len(p), nil
}

// Wait serves the mount until it is unmounted, then closes the 9P
// connection.
func (m *Mounted) Wait() error {
	m.server.Wait()
	return m.client.Close()
}

// Unmount unmounts the file system; Wait then returns.
func (m *Mounted) Unmount() error {
	err := m.server.Unmount()
	if err != nil && errors.Is(err, syscall.EINVAL) {
		return nil // not mounted any more
	}
	return err
}

// DirectBytes is the number of bytes read from the device given with
// WithDirectRead instead of through the server.
func (m *Mounted) DirectBytes() int64 {
	if d := m.root.fsys.cfg.direct; d != nil {
		return d.bytes.Load()
	}
	return 0
}

// Client is the 9P client (for its request counters).
func (m *Mounted) Client() *ninep.Client { return m.client }

// Disconnected is closed when the 9P connection is lost; every operation
// then fails with EIO until the mount is unmounted.
func (m *Mounted) Disconnected() <-chan struct{} { return m.client.Done() }
