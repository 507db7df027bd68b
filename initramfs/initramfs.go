package initramfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/u-root/u-root/pkg/cpio"
)

// DefaultModules are the modules the default "linux" guest ships: virtio
// transports and devices, vsock, the crc32c implementation ext4 and btrfs
// want (ext4's softdep is on the crypto-crc32c alias), the filesystems
// qmount serves, FUSE, device-mapper crypt and md RAID. Those built into
// a kernel are skipped (Closure reports them as Builtin).
var DefaultModules = []string{
	"virtio_mmio", "virtio_pci", "virtio_blk", "virtio_console",
	"vmw_vsock_virtio_transport",
	"crc32c_generic",
	"ext4", "btrfs", "xfs",
	"vfat", "nls_cp437", "nls_iso8859-1", "nls_utf8",
	"exfat", "f2fs", "jfs", "nilfs2", "isofs", "squashfs", "udf",
	"fuse",
	"dm_mod", "dm_crypt",
	"md_mod", "raid0", "raid1", "raid456",
}

// Config says what goes into an initramfs.
type Config struct {
	// Init is the host path of the static binary that becomes /init.
	Init string
	// ModulesDir is the kernel's lib/modules/<release> directory, with
	// uncompressed modules. Empty when the initramfs carries no modules.
	ModulesDir string
	// Modules are module names (or aliases) that must be shipped, with
	// their dependency closure; OptionalModules are shipped when the
	// kernel has them. Built-in ones are skipped.
	Modules, OptionalModules []string
	// Tools are absolute paths of programs inside ToolRoot ("" = the
	// host's /), shipped at the same path with their interpreter and
	// shared libraries.
	ToolRoot string
	Tools    []string
	// Files are extra files.
	Files []File
}

// File is an extra file for the initramfs: a host file, or Data.
type File struct {
	Src  string      // host path (unused when Data is set)
	Data []byte      // contents, when not nil
	Dst  string      // path in the initramfs
	Mode os.FileMode // permission bits; 0 means Src's (0644 for Data)
}

// Result tells what an initramfs holds.
type Result struct {
	Release string   `json:"release,omitempty"` // kernel release of the modules
	Modules []string `json:"modules"`           // shipped modules, in load order
	Builtin []string `json:"builtin,omitempty"` // requested but built into the kernel
	Missing []string `json:"missing,omitempty"` // optional and absent
	Tools   []string `json:"tools,omitempty"`   // tool and library paths shipped
	Records int      `json:"records"`           // cpio records, trailer excluded
	Bytes   int64    `json:"bytes"`             // archive size
	SHA256  string   `json:"sha256"`            // of the archive
}

// Option adjusts Build.
type Option func(*options)

type options struct {
	log   *slog.Logger
	index *ModuleIndex
}

// WithLogger sets the logger for progress messages (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.log = l
		}
	}
}

// WithModuleIndex reuses an already loaded index of cfg.ModulesDir.
func WithModuleIndex(ix *ModuleIndex) Option {
	return func(o *options) { o.index = ix }
}

// Build writes an uncompressed newc cpio archive for cfg to w. It needs no
// privileges: device nodes are written as records.
//
// Uncompressed is the default because the kernel unpacks it at memcpy
// speed; a TCG guest spends longer decompressing than it saves in reading.
func Build(ctx context.Context, w io.Writer, cfg Config, opts ...Option) (*Result, error) {
	o := options{log: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		opt(&o)
	}
	if cfg.Init == "" {
		return nil, errors.New("initramfs: no init binary")
	}
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(w, h)}
	a := newArchive(cpio.Newc.Writer(cw))
	res := &Result{Modules: []string{}}

	for _, d := range []string{"dev", "proc", "sys", "tmp", "run", "mnt", "etc", "root"} {
		mode := uint64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		if err := a.write(cpio.Directory(d, mode)); err != nil {
			return nil, err
		}
	}
	for _, r := range []cpio.Record{
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.CharDev("dev/null", 0o666, 1, 3),
	} {
		if err := a.write(r); err != nil {
			return nil, err
		}
	}
	if err := a.file(cfg.Init, "init", 0o755); err != nil {
		return nil, fmt.Errorf("adding init: %w", err)
	}

	if cfg.ModulesDir != "" {
		if err := addModules(ctx, a, cfg, &o, res); err != nil {
			return nil, err
		}
	} else if len(cfg.Modules) > 0 {
		return nil, errors.New("initramfs: modules requested without a modules directory")
	}

	if len(cfg.Tools) > 0 {
		if err := addTools(a, cfg, res); err != nil {
			return nil, err
		}
	}
	for _, f := range cfg.Files {
		if f.Data != nil {
			mode := f.Mode
			if mode == 0 {
				mode = 0o644
			}
			r := cpio.StaticRecord(f.Data, cpio.Info{Name: f.Dst, Mode: cpio.S_IFREG | uint64(mode.Perm())})
			if err := a.write(r); err != nil {
				return nil, err
			}
			continue
		}
		if err := a.file(f.Src, f.Dst, f.Mode); err != nil {
			return nil, fmt.Errorf("adding %s: %w", f.Dst, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	res.Records = a.n
	if err := cpio.WriteTrailer(a.w); err != nil {
		return nil, fmt.Errorf("writing cpio trailer: %w", err)
	}
	res.Bytes = cw.n
	res.SHA256 = hex.EncodeToString(h.Sum(nil))
	return res, nil
}

// BuildFile builds the initramfs into the file at dst, atomically.
func BuildFile(ctx context.Context, dst string, cfg Config, opts ...Option) (*Result, error) {
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	res, err := Build(ctx, tmp, cfg, opts...)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return nil, err
	}
	return res, nil
}

func addModules(ctx context.Context, a *archive, cfg Config, o *options, res *Result) error {
	ix := o.index
	if ix == nil || ix.Dir != cfg.ModulesDir {
		start := time.Now()
		var err error
		if ix, err = LoadModuleIndex(cfg.ModulesDir); err != nil {
			return fmt.Errorf("indexing modules: %w", err)
		}
		o.log.Debug("module index loaded", "modules", ix.Len(), "took", time.Since(start).Round(time.Millisecond))
	}
	set, err := ix.Closure(cfg.Modules, cfg.OptionalModules)
	if err != nil {
		return fmt.Errorf("resolving modules: %w", err)
	}
	res.Release = ix.Release
	res.Modules = set.Names()
	res.Builtin, res.Missing = set.Builtin, set.Missing
	if len(set.Missing) > 0 {
		o.log.Info("optional modules absent from the kernel", "release", ix.Release, "modules", set.Missing)
	}
	base := path.Join("lib/modules", ix.Release)
	for _, m := range set.Order {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := a.file(filepath.Join(ix.Dir, filepath.FromSlash(m.Path)), path.Join(base, m.Path), 0o644); err != nil {
			return fmt.Errorf("adding module %s: %w", m.Name, err)
		}
	}
	for _, f := range []struct {
		name  string
		write func(io.Writer) error
	}{
		{"modules.dep", set.WriteModulesDep},
		{"modules.softdep", set.WriteModulesSoftdep},
		{"modules.alias", set.WriteModulesAlias},
	} {
		var b bytes.Buffer
		if err := f.write(&b); err != nil {
			return err
		}
		if err := a.write(cpio.StaticFile(path.Join(base, f.name), b.String(), 0o644)); err != nil {
			return err
		}
	}
	// kmodule marks what modules.builtin lists as loaded, so probing a
	// built-in module by name succeeds.
	if b, err := os.ReadFile(filepath.Join(ix.Dir, "modules.builtin")); err == nil {
		if err := a.write(cpio.StaticFile(path.Join(base, "modules.builtin"), string(b), 0o644)); err != nil {
			return err
		}
	}
	return nil
}

func addTools(a *archive, cfg Config, res *Result) error {
	paths, err := toolClosure(cfg.ToolRoot, cfg.Tools)
	if err != nil {
		return fmt.Errorf("resolving tool libraries: %w", err)
	}
	// One copy per real file; other names become symlinks to it.
	written := map[string]string{}
	for _, p := range paths {
		real, err := resolveInRoot(cfg.ToolRoot, p)
		if err != nil {
			return fmt.Errorf("tool %s: %w", p, err)
		}
		dst := strings.TrimPrefix(p, "/")
		if first, ok := written[real]; ok {
			if err := a.write(cpio.Symlink(dst, "/"+first)); err != nil {
				return err
			}
		} else {
			if err := a.file(hostPath(cfg.ToolRoot, real), dst, 0); err != nil {
				return fmt.Errorf("adding tool %s: %w", p, err)
			}
			written[real] = dst
		}
		res.Tools = append(res.Tools, p)
	}
	return nil
}

// archive writes records, creating parent directories first and refusing
// duplicates.
type archive struct {
	w     cpio.RecordWriter
	names map[string]bool
	n     int
}

func newArchive(w cpio.RecordWriter) *archive {
	return &archive{w: w, names: map[string]bool{}}
}

func (a *archive) write(r cpio.Record) error {
	r.Name = cpio.Normalize(r.Name)
	if r.Name == "" || r.Name == "." || strings.HasPrefix(r.Name, "../") {
		return fmt.Errorf("bad archive path %q", r.Name)
	}
	if a.names[r.Name] {
		if r.Mode&cpio.S_IFMT == cpio.S_IFDIR {
			return nil
		}
		return fmt.Errorf("%s: twice in the archive", r.Name)
	}
	if dir := path.Dir(r.Name); dir != "." && !a.names[dir] {
		if err := a.write(cpio.Directory(dir, 0o755)); err != nil {
			return err
		}
	}
	r.NLink = 1
	if r.Mode&cpio.S_IFMT == cpio.S_IFDIR {
		r.NLink = 2
	}
	r.Ino = uint64(a.n + 1)
	if err := a.w.WriteRecord(r); err != nil {
		return fmt.Errorf("writing %s: %w", r.Name, err)
	}
	a.names[r.Name] = true
	a.n++
	return nil
}

// file adds the regular file src as dst. perm 0 keeps src's permissions.
func (a *archive) file(src, dst string, perm os.FileMode) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return fmt.Errorf("%s is not a regular file", src)
	}
	if perm == 0 {
		perm = fi.Mode().Perm()
	}
	// The cpio writer closes f after copying it.
	err = a.write(cpio.Record{
		ReaderAt: f,
		Info: cpio.Info{
			Name:     dst,
			Mode:     cpio.S_IFREG | uint64(perm.Perm()),
			FileSize: uint64(fi.Size()),
		},
	})
	if err != nil {
		f.Close()
	}
	return err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
