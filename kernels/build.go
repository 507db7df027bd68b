package kernels

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// BuildConfig says which kernel to compile.
type BuildConfig struct {
	// Name names the build (its object directory and cached result),
	// e.g. the guest name "mini".
	Name string
	// Arch is the kernel's architecture, GOARCH style (amd64, arm64).
	Arch string
	// Source is the Debian package with the kernel source tarball
	// (/usr/src/<Source>.tar.xz), e.g. "linux-source-6.1".
	Source string
	// Configs are kernel config fragments, merged in order on top of
	// tinyconfig. For each X.config, an X-<arch>.config next to it is
	// merged right after it when it exists.
	Configs []string
	// CacheDir holds the source, the object directories and the results.
	CacheDir string
	// Jobs is make's -j (0: the number of CPUs).
	Jobs int
	// Nice is the niceness the compiler runs at (0: not reniced).
	Nice int
}

// buildVersion changes when the recipe changes so that cached results of
// an older recipe are not reused.
const buildVersion = "1"

// kernelArch is the kernel's ARCH= for a GOARCH, its image target and
// the cross-compiler prefix used on other hosts.
func kernelArch(goarch string) (arch, target, cross string, err error) {
	switch goarch {
	case "amd64":
		return "x86_64", "bzImage", "x86_64-linux-gnu-", nil
	case "arm64":
		return "arm64", "Image", "aarch64-linux-gnu-", nil
	}
	return "", "", "", fmt.Errorf("no kernel build recipe for %s", goarch)
}

// ConfigFragments returns the fragment files for cfgs on arch: each file
// followed by its X-<arch>.config companion when that exists.
func ConfigFragments(cfgs []string, arch string) ([]string, error) {
	var out []string
	for _, c := range cfgs {
		if _, err := os.Stat(c); err != nil {
			return nil, fmt.Errorf("kernel config fragment: %w", err)
		}
		abs, err := filepath.Abs(c)
		if err != nil {
			return nil, err
		}
		out = append(out, abs)
		companion := strings.TrimSuffix(abs, ".config") + "-" + arch + ".config"
		if _, err := os.Stat(companion); err == nil && companion != abs {
			out = append(out, companion)
		}
	}
	return out, nil
}

// Build compiles a kernel from Debian's kernel source package: tinyconfig,
// the fragments merged on top (scripts/kconfig/merge_config.sh), then
// olddefconfig; every option a fragment sets is checked in the result, so
// that an option dropped for an unmet dependency fails the build instead
// of silently missing. The source comes from the installed
// /usr/src/<Source>.tar.xz when its version is apt's candidate, else from
// apt-get download. Objects are kept per name and architecture, so a
// changed fragment rebuilds only what it affects; a result whose inputs
// are unchanged is returned without running make.
//
// Kernels built this way have no loadable modules (CONFIG_MODULES is
// expected off); ModulesDir is an empty directory. Cross-building arm64
// on an amd64 host needs gcc-aarch64-linux-gnu.
func Build(ctx context.Context, cfg BuildConfig, opts ...Option) (*Kernel, error) {
	o := options{log: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		opt(&o)
	}
	if cfg.CacheDir == "" || cfg.Name == "" || cfg.Source == "" || len(cfg.Configs) == 0 {
		return nil, errors.New("kernels: Build needs a name, a source package, config fragments and a cache dir")
	}
	karch, target, cross, err := kernelArch(cfg.Arch)
	if err != nil {
		return nil, err
	}
	frags, err := ConfigFragments(cfg.Configs, cfg.Arch)
	if err != nil {
		return nil, err
	}
	a := apt{log: o.log}
	srcVer, err := a.sourceVersion(ctx, cfg.Source)
	if err != nil {
		return nil, fmt.Errorf("resolving kernel source %s: %w", cfg.Source, err)
	}
	parts := []string{buildVersion, cfg.Source, srcVer, cfg.Arch}
	var fragData [][]byte
	for _, f := range frags {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		fragData = append(fragData, b)
		parts = append(parts, string(b))
	}
	sum := digest(parts...)[:12]
	verTag := strings.ReplaceAll(srcVer, ":", "%3a")
	outDir := filepath.Join(cfg.CacheDir, "kernels", fmt.Sprintf("%s_%s_%s_%s_%s", cfg.Name, cfg.Source, verTag, cfg.Arch, sum))
	if k, err := Load(outDir); err == nil {
		o.log.Debug("built kernel cached", "dir", outDir, "release", k.Release)
		return k, nil
	}

	makeArgs := []string{"ARCH=" + karch}
	if cfg.Arch != runtime.GOARCH {
		if _, err := exec.LookPath(cross + "gcc"); err != nil {
			return nil, fmt.Errorf("cross-compiling a %s kernel needs %sgcc (apt-get install gcc-%s): %w", cfg.Arch, cross, strings.TrimSuffix(cross, "-"), err)
		}
		makeArgs = append(makeArgs, "CROSS_COMPILE="+cross)
	}
	for _, tool := range []string{"make", "gcc", "bc", "bison", "flex", "perl"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("building a kernel needs %s (apt-get install build-essential bc bison flex libelf-dev libssl-dev): %w", tool, err)
		}
	}

	src, err := a.kernelSource(ctx, cfg.Source, srcVer, cfg.CacheDir)
	if err != nil {
		return nil, fmt.Errorf("getting kernel source %s: %w", cfg.Source, err)
	}
	objDir, err := filepath.Abs(filepath.Join(cfg.CacheDir, "kbuild", fmt.Sprintf("%s_%s_%s_%s", cfg.Source, verTag, cfg.Arch, cfg.Name)))
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(objDir, 0o755); err != nil {
		return nil, err
	}
	jobs := cfg.Jobs
	if jobs <= 0 {
		jobs = runtime.NumCPU()
	}
	// One build per object directory at a time.
	lock, err := os.OpenFile(filepath.Join(objDir, ".qmount-lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return nil, fmt.Errorf("locking %s: %w", objDir, err)
	}
	if k, err := Load(outDir); err == nil {
		return k, nil // built while we waited
	}
	b := &kbuild{log: o.log, src: src, objDir: objDir, makeArgs: makeArgs, nice: cfg.Nice}
	if err := b.configure(ctx, frags, fragData); err != nil {
		return nil, err
	}
	start := time.Now()
	o.log.Info("compiling kernel (this takes long: about 20 minutes on 2 cores)", "target", target, "jobs", jobs, "objdir", objDir)
	if err := b.run(ctx, "compiling", true, "make", b.mk(fmt.Sprintf("-j%d", jobs), target)...); err != nil {
		return nil, err
	}
	o.log.Info("kernel compiled", "took", time.Since(start).Round(time.Second))
	cmd := exec.CommandContext(ctx, "make", b.mk("kernelrelease")...)
	cmd.Dir = src
	release, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("make kernelrelease: %w", err)
	}
	return saveBuilt(ctx, objDir, outDir, cfg, srcVer, target, strings.TrimSpace(lastLines(string(release), 1)))
}

// kbuild runs the steps of one kernel build in src with objects in objDir.
type kbuild struct {
	log      *slog.Logger
	src      string
	objDir   string
	makeArgs []string // ARCH=, CROSS_COMPILE=
	nice     int
}

func (b *kbuild) run(ctx context.Context, step string, nice bool, name string, args ...string) error {
	if nice && b.nice > 0 {
		if _, err := exec.LookPath("nice"); err == nil {
			args = append([]string{"-n", strconv.Itoa(b.nice), name}, args...)
			name = "nice"
		}
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = b.src
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %s %s: %w: %s", step, name, strings.Join(args, " "), err, lastLines(out.String(), 15))
	}
	b.log.Debug("kernel build step done", "step", step, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// mk returns make's arguments for the object directory and architecture.
func (b *kbuild) mk(args ...string) []string {
	return append(append([]string{"-s", "O=" + b.objDir}, b.makeArgs...), args...)
}

// configure writes objDir/.config: tinyconfig, the fragments merged, then
// olddefconfig, and checks the result against the fragments.
func (b *kbuild) configure(ctx context.Context, frags []string, fragData [][]byte) error {
	if err := os.MkdirAll(b.objDir, 0o755); err != nil {
		return err
	}
	b.log.Info("configuring kernel (tinyconfig + fragments + olddefconfig)", "src", b.src, "fragments", frags)
	if err := b.run(ctx, "tinyconfig", false, "make", b.mk("tinyconfig")...); err != nil {
		return err
	}
	dotConfig := filepath.Join(b.objDir, ".config")
	if err := b.run(ctx, "merging fragments", false, filepath.Join(b.src, "scripts", "kconfig", "merge_config.sh"),
		append([]string{"-m", "-O", b.objDir, dotConfig}, frags...)...); err != nil {
		return err
	}
	if err := b.run(ctx, "olddefconfig", false, "make", b.mk("olddefconfig")...); err != nil {
		return err
	}
	final, err := os.ReadFile(dotConfig)
	if err != nil {
		return err
	}
	return CheckConfig(final, frags, fragData)
}

// saveBuilt copies a build's outputs into outDir (through a temporary
// directory) and records them.
func saveBuilt(ctx context.Context, objDir, outDir string, cfg BuildConfig, srcVer, target, release string) (*Kernel, error) {
	if err := os.MkdirAll(filepath.Dir(outDir), 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(outDir), ".build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	k := &Kernel{Arch: cfg.Arch, Release: release, Package: cfg.Source, PackageVersion: srcVer, Dir: tmp}
	k.Config = filepath.Join(tmp, "config-"+release)
	if err := copyFile(filepath.Join(objDir, ".config"), k.Config); err != nil {
		return nil, err
	}
	k.ModulesDir = filepath.Join(tmp, "lib", "modules", release)
	if err := os.MkdirAll(k.ModulesDir, 0o755); err != nil {
		return nil, err
	}
	k.Image = filepath.Join(tmp, ImageName(cfg.Arch))
	switch cfg.Arch {
	case "amd64":
		k.Vmlinuz = filepath.Join(tmp, "vmlinuz-"+release)
		if err := copyFile(filepath.Join(objDir, "arch", "x86", "boot", "bzImage"), k.Vmlinuz); err != nil {
			return nil, err
		}
		raw, err := os.ReadFile(filepath.Join(objDir, "vmlinux"))
		if err != nil {
			return nil, err
		}
		// Boot loaders need no symbols; strip them like the packaged one.
		img, err := stripELF(ctx, raw)
		if err != nil {
			return nil, err
		}
		if k.PVHEntry, err = PVHEntry(img); err != nil {
			return nil, err
		}
		k.ImageFormat = "vmlinux-pvh"
		if err := os.WriteFile(k.Image, img, 0o644); err != nil {
			return nil, err
		}
	case "arm64":
		img, err := os.ReadFile(filepath.Join(objDir, "arch", "arm64", "boot", "Image"))
		if err != nil {
			return nil, err
		}
		if !IsARM64Image(img) {
			return nil, errors.New("built arch/arm64/boot/Image is not an arm64 Image")
		}
		k.ImageFormat = "arm64-image"
		if err := os.WriteFile(k.Image, img, 0o644); err != nil {
			return nil, err
		}
		k.Vmlinuz = k.Image
	}
	if err := k.save(); err != nil {
		return nil, err
	}
	os.RemoveAll(outDir)
	if err := os.Rename(tmp, outDir); err != nil {
		return nil, err
	}
	return Load(outDir)
}

// stripELF returns vmlinux without its symbol tables (objcopy
// --strip-all), or as is when objcopy is missing.
func stripELF(ctx context.Context, vmlinux []byte) ([]byte, error) {
	if _, err := exec.LookPath("objcopy"); err != nil {
		return vmlinux, nil
	}
	f, err := os.CreateTemp("", "vmlinux-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	f.Close()
	if err := os.WriteFile(f.Name(), vmlinux, 0o644); err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, "objcopy", "--strip-all", f.Name()).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("objcopy --strip-all vmlinux: %w: %s", err, out)
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		return nil, err
	}
	if _, err := elf.NewFile(bytes.NewReader(b)); err != nil {
		return nil, fmt.Errorf("stripped vmlinux: %w", err)
	}
	return b, nil
}

// CheckConfig checks that the final .config has every option the fragments
// set ("CONFIG_X=v" present, "# CONFIG_X is not set" absent). files name
// the fragments in errors.
func CheckConfig(final []byte, files []string, frags [][]byte) error {
	have := map[string]string{}
	for _, l := range strings.Split(string(final), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && strings.HasPrefix(k, "CONFIG_") {
			have[k] = v
		}
	}
	var bad []string
	for i, frag := range frags {
		sc := bufio.NewScanner(bytes.NewReader(frag))
		for n := 1; sc.Scan(); n++ {
			l := strings.TrimSpace(sc.Text())
			where := fmt.Sprintf("%s:%d", filepath.Base(files[i]), n)
			if rest, ok := strings.CutPrefix(l, "# CONFIG_"); ok && strings.HasSuffix(rest, " is not set") {
				k := "CONFIG_" + strings.TrimSuffix(rest, " is not set")
				if v, ok := have[k]; ok && v != "n" {
					bad = append(bad, fmt.Sprintf("%s: %s=%s, want it unset", where, k, v))
				}
				continue
			}
			if !strings.HasPrefix(l, "CONFIG_") {
				continue
			}
			k, v, _ := strings.Cut(l, "=")
			got, ok := have[k]
			switch {
			case v == "n" && (!ok || got == "n"):
			case !ok:
				bad = append(bad, fmt.Sprintf("%s: %s=%s, but olddefconfig dropped it (a dependency is missing)", where, k, v))
			case got != v:
				bad = append(bad, fmt.Sprintf("%s: %s=%s, but the result has %s", where, k, v, got))
			}
		}
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		return fmt.Errorf("kernel config does not have what the fragments ask for:\n  %s", strings.Join(bad, "\n  "))
	}
	return nil
}

// sourceVersion is the version of the kernel source package apt would
// install.
func (a apt) sourceVersion(ctx context.Context, pkg string) (string, error) {
	r, err := a.show(ctx, pkg)
	if err != nil {
		a.update(ctx)
		if r, err = a.show(ctx, pkg); err != nil {
			return "", err
		}
	}
	return r.Version, nil
}

// kernelSource returns the unpacked source tree of pkg at version ver,
// unpacking it into cache/src when needed.
func (a apt) kernelSource(ctx context.Context, pkg, ver, cache string) (string, error) {
	base := filepath.Join(cache, "src", fmt.Sprintf("%s_%s", pkg, strings.ReplaceAll(ver, ":", "%3a")))
	tree := filepath.Join(base, pkg)
	if _, err := os.Stat(filepath.Join(tree, "Makefile")); err == nil {
		return filepath.Abs(tree)
	}
	tarball := filepath.Join("/usr/src", pkg+".tar.xz")
	installed, _ := exec.CommandContext(ctx, "dpkg-query", "-W", "-f", "${Version}", pkg).Output()
	if _, err := os.Stat(tarball); err != nil || strings.TrimSpace(string(installed)) != ver {
		removeStale(filepath.Join(cache, "debs", ".download-*"), filepath.Join(cache, "src", ".unpack-*"))
		r, err := a.show(ctx, pkg)
		if err != nil {
			return "", err
		}
		deb, err := a.download(ctx, r, filepath.Join(cache, "debs"))
		if err != nil {
			return "", err
		}
		x := filepath.Join(cache, "src", "deb_"+filepath.Base(base))
		if _, err := os.Stat(filepath.Join(x, "usr", "src", pkg+".tar.xz")); err != nil {
			// dpkg-deb makes x but not its parent.
			if err := os.MkdirAll(filepath.Dir(x), 0o755); err != nil {
				return "", err
			}
			if _, err := a.run(ctx, "", "dpkg-deb", "-x", deb, x); err != nil {
				return "", err
			}
		}
		tarball = filepath.Join(x, "usr", "src", pkg+".tar.xz")
	}
	if err := os.MkdirAll(filepath.Dir(base), 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(base), ".unpack-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	a.log.Info("unpacking kernel source", "tarball", tarball)
	if _, err := a.run(ctx, tmp, "tar", "-xf", tarball); err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(tmp, pkg, "Makefile")); err != nil {
		return "", fmt.Errorf("%s has no %s/Makefile", tarball, pkg)
	}
	if err := os.Rename(tmp, base); err != nil {
		return "", err
	}
	return filepath.Abs(tree)
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}

func digest(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:%s;", len(p), p)
	}
	return hex.EncodeToString(h.Sum(nil))
}
