package kernels

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// Sysroot returns a directory holding, for a foreign architecture, the
// Debian packages that provide programs (paths as on this host, e.g.
// /usr/sbin/cryptsetup) and the library packages they depend on, so that
// a guest of arch can ship them with their libraries (qmount-build's
// --tool-root). The packages providing the programs are found with dpkg
// -S on this host (so the host must have them installed), resolved for
// arch with apt-cache, fetched with apt-get download and unpacked with
// dpkg-deb into cacheDir/sysroot/ARCH-HASH (HASH names the package set), with /bin, /sbin and /lib linked
// into /usr as on a merged-/usr Debian. An unchanged package set is not
// fetched or unpacked again.
func Sysroot(ctx context.Context, arch string, programs []string, cacheDir string, opts ...Option) (string, error) {
	o := options{log: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		opt(&o)
	}
	a := apt{log: o.log}
	darch, err := debArch(arch)
	if err != nil {
		return "", err
	}
	var pkgs []string
	for _, p := range programs {
		pkg, err := a.owner(ctx, p)
		if err != nil {
			return "", err
		}
		if !slices.Contains(pkgs, pkg) {
			pkgs = append(pkgs, pkg)
		}
	}
	added, err := a.ensureArch(ctx, darch)
	if err != nil {
		return "", err
	}
	if added {
		a.update(ctx)
	}
	recs, err := a.closure(ctx, pkgs, darch)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, r := range recs {
		fmt.Fprintf(h, "%s=%s:%s\n", r.Package, r.Version, r.Arch)
	}
	stamp := hex.EncodeToString(h.Sum(nil))
	// One directory per package set: guests with different tools share
	// the downloads, not the directory, and a changed set is a new path.
	root := filepath.Join(cacheDir, "sysroot", arch+"-"+stamp[:12])
	stampFile := filepath.Join(root, ".qmount-sysroot")
	if b, err := os.ReadFile(stampFile); err == nil && string(b) == stamp {
		o.log.Debug("sysroot up to date", "dir", root, "packages", len(recs))
		return root, nil
	}
	o.log.Info("making a sysroot for the guest's tools (apt-get download, dpkg-deb)", "arch", arch, "packages", len(recs))
	debDir := filepath.Join(cacheDir, "debs", arch)
	var debs []string
	for _, r := range recs {
		deb, err := a.download(ctx, r, debDir)
		if err != nil {
			return "", fmt.Errorf("sysroot: %w", err)
		}
		debs = append(debs, deb)
	}
	tmp := root + ".new"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(filepath.Join(tmp, "usr"), 0o755); err != nil {
		return "", err
	}
	for _, d := range []string{"bin", "sbin", "lib"} {
		if err := os.MkdirAll(filepath.Join(tmp, "usr", d), 0o755); err != nil {
			return "", err
		}
		if err := os.Symlink("usr/"+d, filepath.Join(tmp, d)); err != nil {
			return "", err
		}
	}
	for _, deb := range debs {
		if err := unpackDeb(ctx, deb, tmp); err != nil {
			os.RemoveAll(tmp)
			return "", fmt.Errorf("sysroot: unpacking %s: %w", filepath.Base(deb), err)
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, ".qmount-sysroot"), []byte(stamp), 0o644); err != nil {
		return "", err
	}
	os.RemoveAll(root)
	if err := os.Rename(tmp, root); err != nil {
		return "", err
	}
	return root, nil
}

// unpackDeb extracts deb's files into root, keeping root's /bin -> usr/bin
// style links (dpkg-deb -x would replace them with directories).
func unpackDeb(ctx context.Context, deb, root string) error {
	cmd := exec.CommandContext(ctx, "sh", "-c", `dpkg-deb --fsys-tarfile "$1" | tar -x --keep-directory-symlink --no-same-owner -C "$2"`, "unpack", deb, root)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%w: %s", err, lastLines(stderr.String(), 5))
	}
	return nil
}

// owner returns the host package that provides path (dpkg -S), also
// under its pre-merged-/usr name (/sbin/x for /usr/sbin/x).
func (a apt) owner(ctx context.Context, path string) (string, error) {
	cands := []string{path}
	if rest, ok := strings.CutPrefix(path, "/usr"); ok {
		cands = append(cands, rest)
	}
	for _, c := range cands {
		out, err := a.run(ctx, "", "dpkg", "-S", c)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(out), "\n") {
			pkgs, file, ok := strings.Cut(line, ": ")
			if !ok || strings.TrimSpace(file) != c || strings.HasPrefix(pkgs, "diversion by") {
				continue
			}
			pkg, _, _ := strings.Cut(strings.Split(pkgs, ", ")[0], ":")
			return pkg, nil
		}
	}
	return "", fmt.Errorf("no installed package provides %s on this host (scripts/install-deps.sh installs the tools): its package for another architecture cannot be found", path)
}

// closure resolves pkgs for arch with the library packages they depend
// on (recursively; other dependencies, such as udev or debconf, are
// not what a program in a guest needs). It asks apt-cache for a whole
// level at once.
func (a apt) closure(ctx context.Context, pkgs []string, arch string) ([]pkgRecord, error) {
	seen := map[string]bool{}
	var out []pkgRecord
	level := slices.Clone(pkgs)
	for len(level) > 0 {
		var ask []string
		for _, p := range level {
			if !seen[p] {
				seen[p] = true
				ask = append(ask, p+":"+arch)
			}
		}
		if len(ask) == 0 {
			break
		}
		recs, err := a.showAll(ctx, ask)
		if err != nil {
			return nil, err
		}
		level = nil
		for _, r := range recs {
			out = append(out, r)
			for _, d := range r.Depends {
				if isLibraryPackage(d) && !seen[d] {
					level = append(level, d)
				}
			}
		}
	}
	slices.SortFunc(out, func(x, y pkgRecord) int { return strings.Compare(x.Package, y.Package) })
	return out, nil
}

// isLibraryPackage reports whether a Debian package name is a shared
// library's (libc6, libblkid1, zlib1g...).
func isLibraryPackage(name string) bool {
	return (strings.HasPrefix(name, "lib") && !strings.HasSuffix(name, "-dev") && !strings.HasSuffix(name, "-bin") && !strings.HasSuffix(name, "-common")) ||
		strings.HasPrefix(name, "zlib1g")
}

// showAll returns the candidate record of each of pkgs (name:arch), from
// one apt-cache call; virtual packages without a candidate are skipped.
func (a apt) showAll(ctx context.Context, pkgs []string) ([]pkgRecord, error) {
	out, err := a.run(ctx, "", "apt-cache", append([]string{"show", "--no-all-versions"}, pkgs...)...)
	if err != nil && len(out) == 0 {
		return nil, err
	}
	var recs []pkgRecord
	for _, r := range parseRecords(out, false) {
		if !slices.ContainsFunc(recs, func(x pkgRecord) bool { return x.Package == r.Package }) {
			recs = append(recs, r)
		}
	}
	return recs, nil
}
