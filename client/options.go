package client

import (
	"io"
	"log/slog"
	"time"
)

// Defaults of the caching options. The guest's file system is changed
// only through this mount, so the kernel may keep what it learnt for a
// long time: every change made through the mount updates or invalidates
// the caches it affects.
const (
	DefaultAttrTimeout     = time.Hour
	DefaultEntryTimeout    = time.Hour
	DefaultNegativeTimeout = time.Hour
	DefaultRequestTimeout  = 2 * time.Minute
	// DefaultMaxWrite is the largest FUSE read or write request.
	DefaultMaxWrite = 1 << 20
	// DefaultMaxReadAhead is the kernel readahead of the mount. FUSE
	// starts a mount at the kernel's default (128 KiB) whatever it asks
	// for, so after mounting the client raises the mount's backing
	// device readahead (/sys/class/bdi/MAJ:MIN/read_ahead_kb; root
	// only): sequential reads then go out as 1 MiB requests, several in
	// flight.
	DefaultMaxReadAhead = 4 << 20
	// DefaultMaxBackground bounds the kernel's asynchronous requests
	// (readahead, writeback) in flight.
	DefaultMaxBackground = 64
)

// Option configures the file system and its mount.
type Option func(*config)

type config struct {
	logger          *slog.Logger
	attrTimeout     time.Duration
	entryTimeout    time.Duration
	negativeTimeout time.Duration
	requestTimeout  time.Duration
	readOnly        bool
	fsName          string
	subtype         string
	serverLocks     bool
	dirCache        bool
	allowOther      bool
	debug           bool
	msize           uint32
	idMap           IDMapper
	direct          *directRead
}

// IDMapper translates owners between the host (FUSE callers and
// attributes shown) and the guest (what the server stores). A nil
// IDMapper keeps ids unchanged.
type IDMapper interface {
	ToHost(uid, gid uint32) (uint32, uint32)
	ToGuest(uid, gid uint32) (uint32, uint32)
}

func defaultConfig() config {
	return config{
		logger:          slog.New(slog.DiscardHandler),
		attrTimeout:     DefaultAttrTimeout,
		entryTimeout:    DefaultEntryTimeout,
		negativeTimeout: DefaultNegativeTimeout,
		requestTimeout:  DefaultRequestTimeout,
		fsName:          "qmount",
		subtype:         "qmount",
		dirCache:        true,
	}
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithAttrTimeout sets how long the kernel caches attributes (default
// DefaultAttrTimeout).
func WithAttrTimeout(d time.Duration) Option { return func(c *config) { c.attrTimeout = d } }

// WithEntryTimeout sets how long the kernel caches name lookups (default
// DefaultEntryTimeout).
func WithEntryTimeout(d time.Duration) Option { return func(c *config) { c.entryTimeout = d } }

// WithNegativeTimeout sets how long the kernel caches failed lookups
// (default DefaultNegativeTimeout).
func WithNegativeTimeout(d time.Duration) Option {
	return func(c *config) { c.negativeTimeout = d }
}

// WithRequestTimeout bounds each 9P request (default
// DefaultRequestTimeout; 0: no bound). A request that times out is
// flushed and the operation fails with ETIMEDOUT.
func WithRequestTimeout(d time.Duration) Option { return func(c *config) { c.requestTimeout = d } }

// WithReadOnly mounts read-only: the FUSE mount is "ro" and every change
// fails with EROFS before reaching the server.
func WithReadOnly() Option { return func(c *config) { c.readOnly = true } }

// WithFsName sets the source shown by mount(8) and df (default "qmount").
func WithFsName(s string) Option { return func(c *config) { c.fsName = s } }

// WithSubtype sets the type shown as fuse.<subtype> (default "qmount").
func WithSubtype(s string) Option { return func(c *config) { c.subtype = s } }

// WithServerLocks forwards POSIX record locks to the server (Tlock)
// instead of letting the host kernel keep them. Kernel locks (the
// default) are exact because the guest's file system is used only
// through this mount; server locks are for servers shared with others.
func WithServerLocks() Option { return func(c *config) { c.serverLocks = true } }

// WithDirCache sets whether the kernel keeps directory listings between
// opens (default true; listings are invalidated by changes made through
// the mount).
func WithDirCache(on bool) Option { return func(c *config) { c.dirCache = on } }

// WithAllowOther lets users other than the mounting one use the mount
// (needs user_allow_other for non-root).
func WithAllowOther() Option { return func(c *config) { c.allowOther = true } }

// WithFUSEDebug logs every FUSE request (go-fuse's debug output).
func WithFUSEDebug() Option { return func(c *config) { c.debug = true } }

// WithMsize sets the 9P message size to negotiate (default
// ninep.DefaultMsize, 1 MiB of payload).
func WithMsize(n uint32) Option { return func(c *config) { c.msize = n } }

// WithIDMapper translates owners between host and guest.
func WithIDMapper(m IDMapper) Option { return func(c *config) { c.idMap = m } }

// WithDirectRead lets the client read file data from dev, the block
// device (or disk image region) of size bytes that the server's file
// system is mounted from, wherever the server gives the file's extent
// map (p9ext EXTENTS; p9server.WithExtentMaps): the data then never
// crosses the VM. Pass it only when dev holds exactly what the guest's
// device holds (a raw image or a disk, at the partition's offset).
func WithDirectRead(dev io.ReaderAt, size int64) Option {
	return func(c *config) { c.direct = &directRead{r: dev, size: size} }
}
