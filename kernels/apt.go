package kernels

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// debArch maps a GOARCH to Debian's architecture name.
func debArch(goarch string) (string, error) {
	switch goarch {
	case "amd64", "arm64":
		return goarch, nil
	case "386":
		return "i386", nil
	case "arm":
		return "armhf", nil
	}
	return "", fmt.Errorf("no Debian kernel for GOARCH %q", goarch)
}

// pkgRecord is the part of an apt-cache show record we use.
type pkgRecord struct {
	Package  string
	Version  string
	Arch     string
	Depends  []string // package names only, alternatives flattened
	Filename string
	Size     string
	SHA256   string
}

// apt runs the Debian package tools.
type apt struct {
	log *slog.Logger
}

func (a apt) run(ctx context.Context, dir string, name string, args ...string) ([]byte, error) {
	if _, err := exec.LookPath(name); err != nil {
		return nil, fmt.Errorf("%s not found (a Debian host with %s is needed): %w", name, toolPackage(name), err)
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var out, stderr bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, lastLines(stderr.String(), 5))
	}
	return out.Bytes(), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}

var depName = regexp.MustCompile(`^\s*([a-z0-9][a-z0-9+.\-]*)(:[a-z0-9]+)?`)

// parseRecords reads the records of apt-cache show output, skipping
// those without a version. Depends and Pre-Depends name every
// alternative with allAlternatives, else the first of each.
func parseRecords(out []byte, allAlternatives bool) []pkgRecord {
	var recs []pkgRecord
	var r pkgRecord
	flush := func() {
		if r.Package != "" && r.Version != "" {
			recs = append(recs, r)
		}
		r = pkgRecord{}
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			flush()
			continue
		}
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		switch k {
		case "Package":
			r.Package = v
		case "Version":
			r.Version = v
		case "Architecture":
			r.Arch = v
		case "Filename":
			r.Filename = v
		case "Size":
			r.Size = v
		case "SHA256":
			r.SHA256 = v
		case "Depends", "Pre-Depends":
			for _, dep := range strings.Split(v, ",") {
				alts := strings.Split(dep, "|")
				if !allAlternatives {
					alts = alts[:1]
				}
				for _, alt := range alts {
					if m := depName.FindStringSubmatch(alt); m != nil {
						r.Depends = append(r.Depends, m[1])
					}
				}
			}
		}
	}
	flush()
	return recs
}

// show returns the candidate record of pkg (name:arch).
func (a apt) show(ctx context.Context, pkg string) (pkgRecord, error) {
	out, err := a.run(ctx, "", "apt-cache", "show", "--no-all-versions", pkg)
	if err != nil {
		return pkgRecord{}, err
	}
	var r pkgRecord
	if recs := parseRecords(out, true); len(recs) > 0 {
		r = recs[0]
	}
	if r.Package == "" || r.Version == "" {
		return r, fmt.Errorf("apt-cache knows no candidate for %s", pkg)
	}
	return r, nil
}

// resolveImage follows a metapackage (linux-image-amd64) down to the
// concrete kernel image package (linux-image-6.1.0-N-amd64).
func (a apt) resolveImage(ctx context.Context, pkg, arch string) (pkgRecord, error) {
	name := pkg
	for range 4 {
		r, err := a.show(ctx, name+":"+arch)
		if err != nil {
			return r, err
		}
		next := ""
		for _, d := range r.Depends {
			if strings.HasPrefix(d, "linux-image-") && d != r.Package {
				next = d
				break
			}
		}
		if next == "" {
			return r, nil
		}
		a.log.Debug("kernel metapackage", "package", r.Package, "depends", next)
		name = next
	}
	return pkgRecord{}, fmt.Errorf("%s: metapackage chain too long", pkg)
}

// listsStamp identifies the state of apt's package lists: when it is
// unchanged, so is what apt-cache would answer. Hosts that disable apt's
// binary cache (Debian's Docker images do) pay seconds per apt-cache call,
// so resolutions are remembered against this stamp.
func listsStamp() string {
	h := sha256.New()
	for _, dir := range []string{"/var/lib/apt/lists", "/etc/apt/sources.list.d", "/etc/apt"} {
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
				fmt.Fprintf(h, "%s/%s %d %d\n", dir, e.Name(), fi.Size(), fi.ModTime().UnixNano())
			}
		}
	}
	if out, err := exec.Command("dpkg", "--print-foreign-architectures").Output(); err == nil {
		h.Write(out)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// resolveCached is resolveImage, remembered in file against listsStamp.
func (a apt) resolveCached(ctx context.Context, file, pkg, arch string) (pkgRecord, error) {
	type entry struct {
		Stamp  string    `json:"stamp"`
		Record pkgRecord `json:"record"`
	}
	key := pkg + ":" + arch
	stamp := listsStamp()
	cache := map[string]entry{}
	if b, err := os.ReadFile(file); err == nil {
		json.Unmarshal(b, &cache)
	}
	if e, ok := cache[key]; ok && e.Stamp == stamp && e.Record.Package != "" {
		a.log.Debug("kernel package resolution cached", "package", key, "resolved", e.Record.Package, "version", e.Record.Version)
		return e.Record, nil
	}
	r, err := a.resolveImage(ctx, pkg, arch)
	if err != nil {
		return r, err
	}
	cache[key] = entry{Stamp: stamp, Record: r}
	if b, err := json.MarshalIndent(cache, "", "  "); err == nil {
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err == nil {
			writeFileAtomic(file, b, 0o644)
		}
	}
	return r, nil
}

// ensureArch makes dpkg know arch (dpkg --add-architecture) when it is not
// the host's own. It reports whether it added it (then apt needs updating).
func (a apt) ensureArch(ctx context.Context, arch string) (bool, error) {
	native, err := a.run(ctx, "", "dpkg", "--print-architecture")
	if err != nil {
		return false, err
	}
	if strings.TrimSpace(string(native)) == arch {
		return false, nil
	}
	foreign, err := a.run(ctx, "", "dpkg", "--print-foreign-architectures")
	if err != nil {
		return false, err
	}
	if slices.Contains(strings.Fields(string(foreign)), arch) {
		return false, nil
	}
	a.log.Info("adding a dpkg architecture to download its kernel package (dpkg --add-architecture; then apt-get update)", "arch", arch)
	if _, err := a.run(ctx, "", "dpkg", "--add-architecture", arch); err != nil {
		return false, fmt.Errorf("adding dpkg architecture %s (needs root): %w", arch, err)
	}
	return true, nil
}

// update runs apt-get update. Failures of unrelated repositories make it
// exit non-zero while the Debian lists are fine, so its error is only
// logged; the look-up that follows decides.
func (a apt) update(ctx context.Context) {
	a.log.Info("updating apt package lists (apt-get update)")
	if _, err := a.run(ctx, "", "apt-get", "update", "-qq"); err != nil {
		a.log.Warn("apt-get update reported errors", "err", err)
	}
}

// download fetches the .deb of r into dir unless a file with the right
// SHA256 is there already, and returns its path.
func (a apt) download(ctx context.Context, r pkgRecord, dir string) (string, error) {
	path := filepath.Join(dir, filepath.Base(r.Filename))
	if r.Filename == "" {
		path = filepath.Join(dir, fmt.Sprintf("%s_%s_%s.deb", r.Package, strings.ReplaceAll(r.Version, ":", "%3a"), r.Arch))
	}
	if ok, err := fileHasSHA256(path, r.SHA256); err == nil && ok {
		a.log.Debug("package cached", "path", path)
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(dir, ".download-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	// Let the tools run from a world-readable directory; apt drops to the
	// _apt user when it can, and warns (harmlessly) when it cannot.
	os.Chmod(tmp, 0o755)
	a.log.Info("downloading package (apt-get download)", "package", r.Package, "version", r.Version, "arch", r.Arch)
	if _, err := a.run(ctx, tmp, "apt-get", "download", "-q", fmt.Sprintf("%s:%s=%s", r.Package, r.Arch, r.Version)); err != nil {
		return "", err
	}
	ents, err := os.ReadDir(tmp)
	if err != nil {
		return "", err
	}
	var got string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".deb") {
			got = filepath.Join(tmp, e.Name())
		}
	}
	if got == "" {
		return "", fmt.Errorf("apt-get download left no .deb for %s", r.Package)
	}
	if r.SHA256 != "" {
		if ok, err := fileHasSHA256(got, r.SHA256); err != nil || !ok {
			return "", fmt.Errorf("%s: SHA256 differs from the apt record (%v)", got, err)
		}
	}
	if err := os.Rename(got, path); err != nil {
		return "", err
	}
	return path, nil
}

func fileHasSHA256(path, want string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	if want == "" {
		return true, nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false, err
	}
	return hex.EncodeToString(h.Sum(nil)) == want, nil
}
