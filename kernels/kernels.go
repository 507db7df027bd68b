package kernels

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Config says which kernel to obtain.
type Config struct {
	// Arch is the kernel's architecture, GOARCH style (amd64, arm64).
	Arch string
	// Package is the Debian package: a metapackage such as
	// "linux-image-amd64" (followed to the concrete linux-image-<abi>-<flavour>)
	// or a concrete image package. Empty means "linux-image-<debian arch>".
	Package string
	// CacheDir holds downloaded packages and unpacked kernels
	// (e.g. build/cache). Nothing there is downloaded twice.
	CacheDir string
}

// Kernel is an unpacked Debian kernel, ready to boot.
type Kernel struct {
	Arch           string `json:"arch"`            // GOARCH
	Release        string `json:"release"`         // uname -r, e.g. 6.1.0-56-amd64
	Package        string `json:"package"`         // concrete package name
	PackageVersion string `json:"package_version"` // Debian version
	// ImageFormat is "vmlinux-pvh" (amd64: ELF with a PVH entry note) or
	// "arm64-image" (uncompressed arm64 Image).
	ImageFormat string `json:"image_format"`
	// PVHEntry is the PVH entry point (amd64 only).
	PVHEntry uint64 `json:"pvh_entry,omitempty"`

	// Absolute paths, filled in when loaded; stored relative to Dir.
	Dir        string `json:"-"` // the kernel's cache directory
	Image      string `json:"-"` // uncompressed bootable kernel (vmlinux or Image)
	Vmlinuz    string `json:"-"` // the kernel as shipped (bzImage on amd64)
	Config     string `json:"-"` // the kernel's config-<release>
	ModulesDir string `json:"-"` // lib/modules/<release>, modules decompressed
}

// ImageName is the conventional file name of the bootable image for arch:
// "vmlinux" on amd64, "Image" on arm64.
func ImageName(arch string) string {
	if arch == "arm64" {
		return "Image"
	}
	return "vmlinux"
}

// Option adjusts Fetch.
type Option func(*options)

type options struct {
	log *slog.Logger
}

// WithLogger sets the logger for progress messages (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.log = l
		}
	}
}

const stampName = "kernel.json"

// Fetch obtains the kernel described by cfg: it resolves the package with
// apt-cache, downloads it with apt-get download (adding the dpkg
// architecture and updating apt's lists first when needed), unpacks it
// with dpkg-deb, makes the uncompressed bootable image and decompresses
// the modules. Every step is cached under cfg.CacheDir; a kernel that is
// already unpacked is returned without downloading anything.
//
// Fetch needs a Debian host with apt, and root for dpkg --add-architecture
// and apt-get update when those are needed.
func Fetch(ctx context.Context, cfg Config, opts ...Option) (*Kernel, error) {
	o := options{log: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		opt(&o)
	}
	if cfg.CacheDir == "" {
		return nil, errors.New("kernels: no cache dir")
	}
	arch, err := debArch(cfg.Arch)
	if err != nil {
		return nil, err
	}
	pkg := cfg.Package
	if pkg == "" {
		pkg = "linux-image-" + arch
	}
	a := apt{log: o.log}

	added, err := a.ensureArch(ctx, arch)
	if err != nil {
		return nil, err
	}
	if added {
		a.update(ctx)
	}
	resolved := filepath.Join(cfg.CacheDir, "kernels", "resolved.json")
	rec, err := a.resolveCached(ctx, resolved, pkg, arch)
	if err != nil && !added {
		// Fresh machines have no lists yet; update once and retry.
		o.log.Info("kernel package not known to apt; updating lists", "package", pkg, "arch", arch, "err", err)
		a.update(ctx)
		rec, err = a.resolveCached(ctx, resolved, pkg, arch)
	}
	if err != nil {
		return nil, fmt.Errorf("resolving kernel package %s for %s: %w", pkg, arch, err)
	}

	dir := filepath.Join(cfg.CacheDir, "kernels", fmt.Sprintf("%s_%s_%s", rec.Package, strings.ReplaceAll(rec.Version, ":", "%3a"), rec.Arch))
	if k, err := Load(dir); err == nil {
		o.log.Debug("kernel cached", "dir", dir, "release", k.Release)
		return k, nil
	}

	removeStale(filepath.Join(cfg.CacheDir, "kernels", ".unpack-*"), filepath.Join(cfg.CacheDir, "debs", ".download-*"))
	deb, err := a.download(ctx, rec, filepath.Join(cfg.CacheDir, "debs"))
	if err != nil {
		return nil, fmt.Errorf("downloading %s: %w", rec.Package, err)
	}
	k, err := unpack(ctx, o.log, deb, dir, cfg.Arch, rec)
	if err != nil {
		return nil, fmt.Errorf("unpacking %s: %w", filepath.Base(deb), err)
	}
	return k, nil
}

// removeStale removes what interrupted runs left (temporary directories
// matching the patterns, older than an hour so that concurrent builds keep
// theirs).
func removeStale(patterns ...string) {
	for _, pat := range patterns {
		m, _ := filepath.Glob(pat)
		for _, p := range m {
			if fi, err := os.Stat(p); err == nil && time.Since(fi.ModTime()) > time.Hour {
				os.RemoveAll(p)
			}
		}
	}
}

// stamp is what kernel.json holds.
type stamp struct {
	Kernel
	Image      string `json:"image"`
	Vmlinuz    string `json:"vmlinuz"`
	Config     string `json:"config"`
	ModulesDir string `json:"modules_dir"`
}

func (k *Kernel) save() error {
	rel := func(p string) string {
		r, err := filepath.Rel(k.Dir, p)
		if err != nil {
			return p
		}
		return r
	}
	s := stamp{Kernel: *k, Image: rel(k.Image), Vmlinuz: rel(k.Vmlinuz), Config: rel(k.Config), ModulesDir: rel(k.ModulesDir)}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(k.Dir, stampName), append(b, '\n'), 0o644)
}

// Load returns the kernel unpacked in dir by an earlier Fetch.
func Load(dir string) (*Kernel, error) {
	b, err := os.ReadFile(filepath.Join(dir, stampName))
	if err != nil {
		return nil, err
	}
	var s stamp
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", stampName, err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	k := s.Kernel
	k.Dir = abs
	k.Image = filepath.Join(abs, s.Image)
	k.Vmlinuz = filepath.Join(abs, s.Vmlinuz)
	k.Config = filepath.Join(abs, s.Config)
	k.ModulesDir = filepath.Join(abs, s.ModulesDir)
	for _, p := range []string{k.Image, k.Vmlinuz, k.ModulesDir} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("cached kernel incomplete: %w", err)
		}
	}
	return &k, nil
}

// unpack extracts deb into dir (through a temporary directory renamed at
// the end) and prepares the bootable image and modules.
func unpack(ctx context.Context, log *slog.Logger, deb, dir, goarch string, rec pkgRecord) (*Kernel, error) {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".unpack-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	root := filepath.Join(tmp, "root")
	start := time.Now()
	log.Info("unpacking kernel package (dpkg-deb -x)", "deb", filepath.Base(deb))
	if _, err := (apt{log: log}).run(ctx, "", "dpkg-deb", "-x", deb, root); err != nil {
		return nil, err
	}

	vmlinuz, release, err := findVmlinuz(root)
	if err != nil {
		return nil, err
	}
	k := &Kernel{Arch: goarch, Release: release, Package: rec.Package, PackageVersion: rec.Version, Dir: tmp, Vmlinuz: vmlinuz}
	k.Config = filepath.Join(root, "boot", "config-"+release)
	k.ModulesDir = filepath.Join(root, "lib", "modules", release)
	if _, err := os.Stat(k.ModulesDir); err != nil {
		k.ModulesDir = filepath.Join(root, "usr", "lib", "modules", release)
		if _, err := os.Stat(k.ModulesDir); err != nil {
			return nil, fmt.Errorf("no modules directory for %s", release)
		}
	}

	raw, err := os.ReadFile(vmlinuz)
	if err != nil {
		return nil, err
	}
	var img []byte
	switch goarch {
	case "amd64", "386":
		if img, err = ExtractVmlinux(ctx, raw); err != nil {
			return nil, fmt.Errorf("extracting vmlinux from %s: %w", filepath.Base(vmlinuz), err)
		}
		if k.PVHEntry, err = PVHEntry(img); err != nil {
			return nil, err
		}
		k.ImageFormat = "vmlinux-pvh"
	case "arm64":
		if img, err = ARM64Image(ctx, raw); err != nil {
			return nil, err
		}
		k.ImageFormat = "arm64-image"
	default:
		return nil, fmt.Errorf("no bootable image recipe for %s", goarch)
	}
	k.Image = filepath.Join(tmp, ImageName(goarch))
	if err := os.WriteFile(k.Image, img, 0o644); err != nil {
		return nil, err
	}
	n, err := DecompressModules(ctx, k.ModulesDir)
	if err != nil {
		return nil, fmt.Errorf("decompressing modules: %w", err)
	}
	log.Info("kernel unpacked", "release", release, "image", filepath.Base(k.Image), "image_bytes", len(img), "modules_decompressed", n, "took", time.Since(start).Round(time.Millisecond))

	if err := k.save(); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		if _, lerr := Load(dir); lerr == nil {
			return Load(dir) // someone else finished first
		}
		return nil, err
	}
	// Recompute the paths now that tmp is dir.
	return Load(dir)
}

// findVmlinuz returns boot/vmlinuz-<release> (or vmlinux-, Image-) in root.
func findVmlinuz(root string) (path, release string, err error) {
	for _, pat := range []string{"vmlinuz-*", "vmlinux-*", "Image-*"} {
		m, _ := filepath.Glob(filepath.Join(root, "boot", pat))
		if len(m) == 1 {
			base := filepath.Base(m[0])
			return m[0], base[strings.Index(base, "-")+1:], nil
		}
		if len(m) > 1 {
			return "", "", fmt.Errorf("several kernels in the package: %v", m)
		}
	}
	return "", "", errors.New("no boot/vmlinuz-* in the package")
}

// DecompressModules decompresses every .ko.xz, .ko.zst and .ko.gz under dir
// in place (the compressed file is replaced by the .ko) and returns how
// many it did. Loading uncompressed modules in a TCG guest is many times
// faster than decompressing them there.
func DecompressModules(ctx context.Context, dir string) (int, error) {
	byExt := map[string][]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		for _, ext := range []string{".ko.xz", ".ko.zst", ".ko.gz"} {
			if !d.IsDir() && strings.HasSuffix(p, ext) {
				byExt[ext] = append(byExt[ext], p)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for ext, files := range byExt {
		if ext == ".ko.gz" {
			for _, f := range files {
				if err := gunzipFile(ctx, f); err != nil {
					return n, err
				}
				n++
			}
			continue
		}
		tool, args := "xz", []string{"-d", "-q", "-f", "--"}
		if ext == ".ko.zst" {
			tool, args = "zstd", []string{"-d", "-q", "-f", "--rm", "--"}
		}
		if _, err := exec.LookPath(tool); err != nil {
			return n, fmt.Errorf("%s is needed for %s modules (apt-get install %s): %w", tool, ext, toolPackage(tool), err)
		}
		// One process per batch keeps thousands of modules fast.
		for len(files) > 0 {
			batch := files[:min(len(files), 256)]
			files = files[len(batch):]
			cmd := exec.CommandContext(ctx, tool, append(args, batch...)...)
			if out, err := cmd.CombinedOutput(); err != nil {
				return n, fmt.Errorf("%s -d: %w: %s", tool, err, lastLines(string(out), 3))
			}
			n += len(batch)
		}
	}
	return n, nil
}

func gunzipFile(ctx context.Context, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	out, err := decompress(ctx, Gzip, b)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := os.WriteFile(strings.TrimSuffix(path, ".gz"), out, 0o644); err != nil {
		return err
	}
	return os.Remove(path)
}
