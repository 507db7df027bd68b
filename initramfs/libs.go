package initramfs

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// resolveInRoot follows symlinks of the absolute path p inside root (so a
// sysroot's absolute links stay in it) and returns the final path, also
// absolute inside root. root "" or "/" is the host.
func resolveInRoot(root, p string) (string, error) {
	p = path.Clean("/" + p)
	for hops := 0; ; {
		// Resolve component by component.
		parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
		cur := "/"
		changed := false
		for i, part := range parts {
			next := path.Join(cur, part)
			fi, err := os.Lstat(hostPath(root, next))
			if err != nil {
				return "", err
			}
			if fi.Mode()&os.ModeSymlink == 0 {
				cur = next
				continue
			}
			if hops++; hops > 40 {
				return "", fmt.Errorf("%s: too many symlinks", p)
			}
			target, err := os.Readlink(hostPath(root, next))
			if err != nil {
				return "", err
			}
			if !path.IsAbs(target) {
				target = path.Join(cur, target)
			}
			p = path.Join(append([]string{target}, parts[i+1:]...)...)
			changed = true
			break
		}
		if !changed {
			return cur, nil
		}
	}
}

func hostPath(root, p string) string {
	if root == "" || root == "/" {
		return p
	}
	return filepath.Join(root, filepath.FromSlash(p))
}

// libDirs are the default library directories per ELF machine, in the
// order Debian's ld.so searches them (multiarch first).
func libDirs(m elf.Machine) []string {
	var triplet string
	switch m {
	case elf.EM_X86_64:
		triplet = "x86_64-linux-gnu"
	case elf.EM_AARCH64:
		triplet = "aarch64-linux-gnu"
	case elf.EM_386:
		triplet = "i386-linux-gnu"
	case elf.EM_ARM:
		triplet = "arm-linux-gnueabihf"
	}
	dirs := []string{}
	if triplet != "" {
		dirs = append(dirs, "/lib/"+triplet, "/usr/lib/"+triplet)
	}
	return append(dirs, "/lib64", "/usr/lib64", "/lib", "/usr/lib")
}

// elfDeps returns the interpreter and the libraries (paths inside root)
// that the ELF file at p (inside root) needs directly. A file that is not
// ELF (a script) needs nothing.
func elfDeps(root, p string) ([]string, error) {
	real, err := resolveInRoot(root, p)
	if err != nil {
		return nil, err
	}
	f, err := elf.Open(hostPath(root, real))
	if err != nil {
		var fe *elf.FormatError
		if errors.As(err, &fe) {
			return nil, nil
		}
		return nil, err
	}
	defer f.Close()
	var out []string
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			b := make([]byte, prog.Filesz)
			if _, err := prog.ReadAt(b, 0); err != nil {
				return nil, fmt.Errorf("%s: reading PT_INTERP: %w", p, err)
			}
			out = append(out, strings.TrimRight(string(b), "\x00"))
		}
	}
	needed, err := f.DynString(elf.DT_NEEDED)
	if err != nil || len(needed) == 0 {
		return out, nil // static
	}
	var search []string
	for _, tag := range []elf.DynTag{elf.DT_RUNPATH, elf.DT_RPATH} {
		rp, _ := f.DynString(tag)
		for _, s := range rp {
			for _, d := range strings.Split(s, ":") {
				d = strings.ReplaceAll(d, "$ORIGIN", path.Dir(p))
				d = strings.ReplaceAll(d, "${ORIGIN}", path.Dir(p))
				if path.IsAbs(d) {
					search = append(search, d)
				}
			}
		}
	}
	search = append(search, libDirs(f.Machine)...)
	for _, lib := range needed {
		found := ""
		for _, d := range search {
			c := path.Join(d, lib)
			if r, err := resolveInRoot(root, c); err == nil {
				if fi, err := os.Stat(hostPath(root, r)); err == nil && fi.Mode().IsRegular() {
					found = c
					break
				}
			}
		}
		if found == "" {
			return nil, fmt.Errorf("%s needs %s, found in none of %v", p, lib, search)
		}
		out = append(out, found)
	}
	return out, nil
}

// toolClosure returns every path (inside root) that the given programs
// need: the programs themselves, their interpreters and libraries,
// transitively, in a stable order.
func toolClosure(root string, programs []string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	queue := append([]string(nil), programs...)
	for len(queue) > 0 {
		p := path.Clean(queue[0])
		queue = queue[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, p)
		deps, err := elfDeps(root, p)
		if err != nil {
			return nil, err
		}
		queue = append(queue, deps...)
	}
	return out, nil
}

// ELFInterp checks that the file at path is an ELF executable for goarch
// (GOARCH style) and returns its interpreter ("" for a static binary).
func ELFInterp(path, goarch string) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	want := map[string]elf.Machine{
		"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "386": elf.EM_386,
		"arm": elf.EM_ARM, "riscv64": elf.EM_RISCV,
	}[goarch]
	if f.Machine != want {
		return "", fmt.Errorf("ELF machine %v, want %s", f.Machine, goarch)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			b := make([]byte, prog.Filesz)
			if _, err := prog.ReadAt(b, 0); err != nil {
				return "", err
			}
			return strings.TrimRight(string(b), "\x00"), nil
		}
	}
	return "", nil
}
