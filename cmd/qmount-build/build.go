package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/qmount/qmount/guests"
	"github.com/qmount/qmount/initramfs"
	"github.com/qmount/qmount/kernels"
)

// builderVersion changes when the build recipe changes in a way that must
// invalidate earlier outputs.
const builderVersion = "2"

type buildConfig struct {
	Def  *guests.Def
	Arch string
	Out  string // output directory
	// Cache is the cache directory (downloads, kernel sources and builds).
	Cache string
	Init  string // prebuilt init binary; "" builds ./cmd/qmount-init
	// KernelPackage replaces the definition's kernel with this Debian
	// package; the guest then ships whichever of its modules exist.
	KernelPackage string
	// ExtraModules and ExtraTools are shipped on top of the definition's.
	ExtraModules, ExtraTools []string
	ToolRoot                 string
	Force                    bool
	// Jobs and Nice tune a kernel compile (kernels.BuildConfig).
	Jobs, Nice int
}

// getKernel fetches or compiles the guest's kernel for cfg.Arch.
func getKernel(ctx context.Context, cfg buildConfig, log *slog.Logger) (*kernels.Kernel, error) {
	d := cfg.Def
	ks, ok := d.Kernel[cfg.Arch]
	if !ok {
		return nil, fmt.Errorf("guest %s has no kernel for %s (it supports %s)", d.Name, cfg.Arch, strings.Join(d.Arches(), ", "))
	}
	if cfg.KernelPackage != "" {
		ks = guests.KernelSource{Debian: cfg.KernelPackage}
	}
	if !ks.Compiled() {
		k, err := kernels.Fetch(ctx, kernels.Config{Arch: cfg.Arch, Package: ks.Debian, CacheDir: cfg.Cache}, kernels.WithLogger(log))
		if err != nil {
			return nil, fmt.Errorf("fetching kernel: %w", err)
		}
		return k, nil
	}
	conf, err := resolveConfig(d, ks.Config)
	if err != nil {
		return nil, err
	}
	k, err := kernels.Build(ctx, kernels.BuildConfig{
		Name: d.Name, Arch: cfg.Arch, Source: ks.Source, Configs: []string{conf},
		CacheDir: cfg.Cache, Jobs: cfg.Jobs, Nice: cfg.Nice,
	}, kernels.WithLogger(log))
	if err != nil {
		return nil, fmt.Errorf("building kernel: %w", err)
	}
	return k, nil
}

// build gets the kernel, builds the init, the initramfs and the manifest.
// Steps whose inputs are unchanged are skipped.
func build(ctx context.Context, cfg buildConfig, log *slog.Logger) (*initramfs.Manifest, error) {
	start := time.Now()
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, fmt.Errorf("creating output dir: %w", err)
	}
	if cfg.Init != "" {
		if err := checkStaticInit(cfg.Init, cfg.Arch); err != nil {
			return nil, err
		}
	}
	k, err := getKernel(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	log.Info("kernel ready", "package", k.Package, "version", k.PackageVersion, "release", k.Release)

	initPath := cfg.Init
	if initPath == "" {
		if initPath, err = buildInit(ctx, cfg.Cache, cfg.Arch, log); err != nil {
			return nil, fmt.Errorf("building init: %w", err)
		}
		if err := checkStaticInit(initPath, cfg.Arch); err != nil {
			return nil, err
		}
	}
	initInfo, err := initramfs.Describe(initPath)
	if err != nil {
		return nil, fmt.Errorf("reading init: %w", err)
	}

	// Kernel files: copied only when their content changed.
	imgInfo, err := install(k.Image, filepath.Join(cfg.Out, kernels.ImageName(cfg.Arch)))
	if err != nil {
		return nil, fmt.Errorf("installing kernel image: %w", err)
	}
	kinfo := initramfs.KernelInfo{
		Package: k.Package, PackageVersion: k.PackageVersion, Release: k.Release,
		Format: k.ImageFormat, PVHEntry: k.PVHEntry, FileInfo: imgInfo,
	}
	if cfg.Arch == "amd64" {
		bz, err := install(k.Vmlinuz, filepath.Join(cfg.Out, "bzImage"))
		if err != nil {
			return nil, fmt.Errorf("installing bzImage: %w", err)
		}
		kinfo.Compressed = &bz
	}
	if _, err := install(k.Config, filepath.Join(cfg.Out, "config")); err == nil {
		kinfo.Config = "config"
	}

	// A kernel without loadable modules (everything built in) has no index.
	var ix *initramfs.ModuleIndex
	modulesDir := ""
	if hasModules(k.ModulesDir) {
		modulesDir = k.ModulesDir
		if ix, err = initramfs.LoadModuleIndex(k.ModulesDir); err != nil {
			return nil, fmt.Errorf("indexing modules: %w", err)
		}
	}
	if cfg.ToolRoot == "" && cfg.Arch != runtime.GOARCH {
		// Another architecture's tools: its Debian packages, unpacked.
		tools := append(cfg.Def.AllTools(), cfg.ExtraTools...)
		if len(tools) > 0 {
			root, err := kernels.Sysroot(ctx, cfg.Arch, tools, cfg.Cache, kernels.WithLogger(log))
			if err != nil {
				return nil, fmt.Errorf("the guest's tools for %s: %w", cfg.Arch, err)
			}
			cfg.ToolRoot = root
		}
	}
	p, err := planBuild(cfg.Def, ix, cfg.Arch, cfg.ToolRoot, cfg.ExtraModules, cfg.ExtraTools, cfg.KernelPackage != "", log)
	if err != nil {
		return nil, err
	}
	var set *initramfs.ModuleSet
	if ix != nil {
		if set, err = ix.Closure(p.Modules, p.OptionalModules); err != nil {
			return nil, fmt.Errorf("resolving modules: %w", err)
		}
	}
	info := guestInfoFor(p.Def, k.Release, set)
	infoJSON, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return nil, err
	}
	defJSON, err := json.MarshalIndent(p.Def, "", "  ")
	if err != nil {
		return nil, err
	}
	rcfg := initramfs.Config{
		Init:            initPath,
		ModulesDir:      modulesDir,
		Modules:         p.Modules,
		OptionalModules: p.OptionalModules,
		ToolRoot:        cfg.ToolRoot,
		Tools:           p.Tools,
		Files:           []initramfs.File{{Dst: guestInfoPath, Data: append(infoJSON, '\n')}},
	}
	inputs := digest(builderVersion, cfg.Def.Name, cfg.Arch, k.Package, k.PackageVersion, k.Release, initInfo.SHA256, imgInfo.SHA256,
		strings.Join(p.Modules, ","), strings.Join(p.OptionalModules, ","), cfg.ToolRoot, strings.Join(p.Tools, ","), string(infoJSON), string(defJSON))

	cpioPath := filepath.Join(cfg.Out, "initramfs.cpio")
	defPath := filepath.Join(cfg.Out, guests.DefFile)
	if old, err := initramfs.ReadManifest(cfg.Out); err == nil && !cfg.Force && old.Inputs == inputs {
		cur, err := initramfs.Describe(cpioPath)
		oldDef, derr := os.ReadFile(defPath)
		if err == nil && derr == nil && cur.SHA256 == old.Initramfs.SHA256 && old.Kernel.SHA256 == imgInfo.SHA256 && bytes.Equal(bytes.TrimSpace(oldDef), defJSON) {
			log.Info("guest up to date", "guest", cfg.Def.Name, "arch", cfg.Arch, "out", cfg.Out)
			return old, nil
		}
	}

	opts := []initramfs.Option{initramfs.WithLogger(log)}
	if ix != nil {
		opts = append(opts, initramfs.WithModuleIndex(ix))
	}
	res, err := initramfs.BuildFile(ctx, cpioPath, rcfg, opts...)
	if err != nil {
		return nil, fmt.Errorf("building initramfs: %w", err)
	}
	log.Info("initramfs built", "bytes", res.Bytes, "modules", len(res.Modules), "tools", len(res.Tools))
	m := &initramfs.Manifest{
		Name:   cfg.Def.Name,
		Arch:   cfg.Arch,
		Built:  time.Now().UTC().Truncate(time.Second),
		Inputs: inputs,
		Kernel: kinfo,
		Initramfs: initramfs.InitramfsInfo{
			FileInfo:    initramfs.FileInfo{File: filepath.Base(cpioPath), Size: res.Bytes, SHA256: res.SHA256},
			Compression: "none",
			Release:     res.Release,
			Modules:     res.Modules,
			Builtin:     res.Builtin,
			Missing:     res.Missing,
			Tools:       res.Tools,
			Records:     res.Records,
		},
		Init: initramfs.FileInfo{Size: initInfo.Size, SHA256: initInfo.SHA256},
	}
	// The definition as built goes next to the manifest: selection reads
	// which drivers this build has from it.
	if err := writeFileAtomic(defPath, append(defJSON, '\n')); err != nil {
		return nil, fmt.Errorf("writing the built definition: %w", err)
	}
	if err := initramfs.WriteManifest(cfg.Out, m); err != nil {
		return nil, fmt.Errorf("writing manifest: %w", err)
	}
	log.Info("guest built", "guest", cfg.Def.Name, "arch", cfg.Arch, "out", cfg.Out, "took", time.Since(start).Round(time.Millisecond))
	return m, nil
}

// hasModules reports whether dir holds any .ko file.
func hasModules(dir string) bool {
	found := false
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".ko") {
			found = true
			return filepath.SkipAll
		}
		return nil
	})
	return found
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// buildInit builds ./cmd/qmount-init for arch into the cache and returns
// its path. The go tool's own cache makes an unchanged rebuild quick.
func buildInit(ctx context.Context, cache, arch string, log *slog.Logger) (string, error) {
	if _, err := os.Stat(filepath.Join("cmd", "qmount-init")); err != nil {
		return "", fmt.Errorf("no ./cmd/qmount-init here (run from the repository root, or pass --init): %w", err)
	}
	dir, err := filepath.Abs(filepath.Join(cache, "init", arch))
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	out := filepath.Join(dir, "qmount-init")
	log.Info("building init", "package", "./cmd/qmount-init", "arch", arch)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./cmd/qmount-init")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ./cmd/qmount-init: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// checkStaticInit refuses an init that is not a static ELF for arch: the
// initramfs has no dynamic loader for it.
func checkStaticInit(path, arch string) error {
	deps, err := initramfs.ELFInterp(path, arch)
	if err != nil {
		return fmt.Errorf("init %s: %w", path, err)
	}
	if deps != "" {
		return fmt.Errorf("init %s is dynamically linked (interpreter %s); build it with CGO_ENABLED=0", path, deps)
	}
	return nil
}

// install copies src to dst unless dst already has the same content, and
// describes dst.
func install(src, dst string) (initramfs.FileInfo, error) {
	want, err := initramfs.Describe(src)
	if err != nil {
		return want, err
	}
	if have, err := initramfs.Describe(dst); err == nil && have.SHA256 == want.SHA256 {
		return have, nil
	}
	tmp := dst + ".tmp"
	os.Remove(tmp)
	if err := os.Link(src, tmp); err != nil {
		if err := copyFile(src, tmp); err != nil {
			return want, err
		}
	}
	if err := os.Rename(tmp, dst); err != nil {
		return want, err
	}
	return initramfs.Describe(dst)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	return errors.Join(err, out.Close())
}

func digest(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:%s;", len(p), p)
	}
	return hex.EncodeToString(h.Sum(nil))
}
