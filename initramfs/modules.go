package initramfs

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
)

// Module is one loadable kernel module of a kernel's module tree.
type Module struct {
	Name    string   // canonical name: dashes turned to underscores
	Path    string   // relative to the modules directory, e.g. kernel/fs/ext4/ext4.ko
	Depends []string // hard dependencies (module names), from .modinfo depends=
	// SoftPre and SoftPost are the softdep= names (module names or
	// aliases) to load before and after the module.
	SoftPre, SoftPost []string
	Aliases           []string
}

// ModuleIndex describes a kernel's module tree: its loadable modules with
// their .modinfo, and the modules built into the kernel.
type ModuleIndex struct {
	Dir     string // the lib/modules/<release> directory
	Release string // its base name

	mods    map[string]*Module
	builtin map[string]bool
	// aliases of loadable and builtin modules, alias pattern -> names
	aliases        map[string][]string
	builtinAliases map[string][]string
}

// ModName canonicalizes a module name: file names and softdeps use dashes
// and underscores interchangeably, the kernel uses underscores.
func ModName(s string) string {
	s = path.Base(s)
	for _, ext := range []string{".ko.xz", ".ko.zst", ".ko.gz", ".ko"} {
		s = strings.TrimSuffix(s, ext)
	}
	return strings.ReplaceAll(s, "-", "_")
}

// LoadModuleIndex reads every module's .modinfo under dir (a
// lib/modules/<release> directory with uncompressed .ko files) and its
// modules.builtin and modules.builtin.modinfo.
func LoadModuleIndex(dir string) (*ModuleIndex, error) {
	ix := &ModuleIndex{
		Dir:            dir,
		Release:        filepath.Base(dir),
		mods:           map[string]*Module{},
		builtin:        map[string]bool{},
		aliases:        map[string][]string{},
		builtinAliases: map[string][]string{},
	}
	var paths []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".ko") {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("walking modules: %w", err)
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("no .ko modules under %s (compressed modules must be decompressed first)", dir)
	}
	mods := make([]*Module, len(paths))
	errs := make([]error, len(paths))
	var wg sync.WaitGroup
	const workers = 4
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(paths); i += workers {
				mods[i], errs[i] = readModule(dir, paths[i])
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for _, m := range mods {
		if old, ok := ix.mods[m.Name]; ok {
			return nil, fmt.Errorf("module %s twice: %s and %s", m.Name, old.Path, m.Path)
		}
		ix.mods[m.Name] = m
		for _, a := range m.Aliases {
			ix.aliases[a] = append(ix.aliases[a], m.Name)
		}
	}
	if err := ix.readBuiltin(); err != nil {
		return nil, err
	}
	return ix, nil
}

func (ix *ModuleIndex) readBuiltin() error {
	b, err := os.ReadFile(filepath.Join(ix.Dir, "modules.builtin"))
	if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("reading modules.builtin: %w", err)
	}
	for _, l := range strings.Fields(string(b)) {
		ix.builtin[ModName(l)] = true
	}
	b, err = os.ReadFile(filepath.Join(ix.Dir, "modules.builtin.modinfo"))
	if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("reading modules.builtin.modinfo: %w", err)
	}
	for _, kv := range bytes.Split(b, []byte{0}) {
		mod, rest, ok := strings.Cut(string(kv), ".")
		if !ok {
			continue
		}
		if a, ok := strings.CutPrefix(rest, "alias="); ok {
			name := ModName(mod)
			ix.builtin[name] = true
			ix.builtinAliases[a] = append(ix.builtinAliases[a], name)
		}
	}
	return nil
}

// readModule parses the .modinfo section of the module file p.
func readModule(dir, p string) (*Module, error) {
	rel, err := filepath.Rel(dir, p)
	if err != nil {
		return nil, err
	}
	m := &Module{Name: ModName(p), Path: filepath.ToSlash(rel)}
	f, err := elf.Open(p)
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", rel, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return m, nil
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("module %s: reading .modinfo: %w", rel, err)
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		switch k {
		case "name":
			if v != "" {
				m.Name = ModName(v)
			}
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d = strings.TrimSpace(d); d != "" {
					m.Depends = append(m.Depends, ModName(d))
				}
			}
		case "softdep":
			pre, post := parseSoftdep(v)
			m.SoftPre = append(m.SoftPre, pre...)
			m.SoftPost = append(m.SoftPost, post...)
		case "alias":
			m.Aliases = append(m.Aliases, v)
		}
	}
	return m, nil
}

// parseSoftdep parses "pre: a b post: c" (modprobe.d softdep syntax).
func parseSoftdep(v string) (pre, post []string) {
	var cur *[]string
	for _, tok := range strings.Fields(v) {
		switch tok {
		case "pre:":
			cur = &pre
		case "post:":
			cur = &post
		default:
			if cur != nil {
				*cur = append(*cur, tok)
			}
		}
	}
	return pre, post
}

// Module returns the loadable module called name (dashes or underscores).
func (ix *ModuleIndex) Module(name string) (*Module, bool) {
	m, ok := ix.mods[ModName(name)]
	return m, ok
}

// Builtin reports whether name is built into the kernel.
func (ix *ModuleIndex) Builtin(name string) bool { return ix.builtin[ModName(name)] }

// Len is the number of loadable modules.
func (ix *ModuleIndex) Len() int { return len(ix.mods) }

// lookup resolves a module name or alias. It returns the loadable modules
// that provide it, or builtin=true when the kernel has it built in.
// Several loadable providers of one alias (crc32c: crc32c_generic and
// crc32c_intel) resolve to the portable *_generic one when there is one,
// since it loads on every CPU.
func (ix *ModuleIndex) lookup(name string) (mods []string, builtin bool) {
	n := ModName(name)
	if _, ok := ix.mods[n]; ok {
		return []string{n}, false
	}
	if ix.builtin[n] {
		return nil, true
	}
	if len(matchAlias(ix.builtinAliases, name)) > 0 {
		return nil, true
	}
	cands := matchAlias(ix.aliases, name)
	if len(cands) == 0 {
		return nil, false
	}
	for _, c := range cands {
		if strings.HasSuffix(c, "_generic") {
			return []string{c}, false
		}
	}
	return cands[:1], false
}

// matchAlias returns the sorted names whose alias pattern matches name.
func matchAlias(aliases map[string][]string, name string) []string {
	set := map[string]bool{}
	for _, n := range aliases[name] {
		set[n] = true
	}
	if len(set) == 0 {
		for pat, names := range aliases {
			if !strings.ContainsAny(pat, "*?[") {
				continue
			}
			if ok, _ := path.Match(pat, name); ok {
				for _, n := range names {
					set[n] = true
				}
			}
		}
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// ModuleSet is a closed set of modules: the requested ones plus all their
// hard dependencies and resolvable softdeps.
type ModuleSet struct {
	Index *ModuleIndex
	// Order lists the modules so that each comes after its hard
	// dependencies and pre-softdeps: a valid load order.
	Order []*Module
	// Builtin lists requested names that are built into the kernel.
	Builtin []string
	// Missing lists optional requested names the kernel has in no form.
	Missing []string
	// SoftPre maps a module to the resolved modules of its pre-softdeps
	// that are in the set.
	SoftPre map[string][]string
	// SoftPost likewise for post-softdeps.
	SoftPost map[string][]string
}

// Closure resolves the modules named in required (an error when one is
// neither a module, an alias nor built in) and optional (recorded in
// Missing when absent), plus the closure of their dependencies: depends=
// (an error when unresolvable) and softdep= pre: and post: (skipped when
// unresolvable, as modprobe does).
func (ix *ModuleIndex) Closure(required, optional []string) (*ModuleSet, error) {
	s := &ModuleSet{Index: ix, SoftPre: map[string][]string{}, SoftPost: map[string][]string{}}
	in := map[string]bool{}
	var queue []string
	add := func(names []string) {
		for _, n := range names {
			if !in[n] {
				in[n] = true
				queue = append(queue, n)
			}
		}
	}
	request := func(name string, must bool) error {
		mods, builtin := ix.lookup(name)
		switch {
		case builtin:
			s.Builtin = append(s.Builtin, name)
		case len(mods) > 0:
			add(mods)
		case must:
			return fmt.Errorf("module %q: not in %s and not built in", name, ix.Release)
		default:
			s.Missing = append(s.Missing, name)
		}
		return nil
	}
	for _, n := range required {
		if err := request(n, true); err != nil {
			return nil, err
		}
	}
	for _, n := range optional {
		if err := request(n, false); err != nil {
			return nil, err
		}
	}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		m := ix.mods[n]
		for _, d := range m.Depends {
			mods, builtin := ix.lookup(d)
			if !builtin && len(mods) == 0 {
				return nil, fmt.Errorf("module %s depends on %s, which %s lacks", n, d, ix.Release)
			}
			add(mods)
		}
		for _, d := range m.SoftPre {
			mods, _ := ix.lookup(d)
			add(mods)
			s.SoftPre[n] = appendNew(s.SoftPre[n], mods...)
		}
		for _, d := range m.SoftPost {
			mods, _ := ix.lookup(d)
			add(mods)
			s.SoftPost[n] = appendNew(s.SoftPost[n], mods...)
		}
	}
	order, err := s.loadOrder(in)
	if err != nil {
		return nil, err
	}
	s.Order = order
	return s, nil
}

func appendNew(list []string, names ...string) []string {
	for _, n := range names {
		if !slices.Contains(list, n) {
			list = append(list, n)
		}
	}
	return list
}

// edges returns what must load before n: hard deps, then pre-softdeps
// that would not make a cycle.
func (s *ModuleSet) before(n string) []string {
	var out []string
	for _, d := range s.Index.mods[n].Depends {
		if mods, _ := s.Index.lookup(d); len(mods) > 0 {
			out = appendNew(out, mods...)
		}
	}
	return out
}

// loadOrder sorts the set topologically (dependencies first, names
// alphabetically among equals, so the result is reproducible). A
// pre-softdep that would close a cycle is dropped from SoftPre, as it
// cannot be honoured.
func (s *ModuleSet) loadOrder(in map[string]bool) ([]*Module, error) {
	names := make([]string, 0, len(in))
	for n := range in {
		names = append(names, n)
	}
	sort.Strings(names)
	// Keep the soft edges that leave the graph acyclic: n needs d first,
	// unless d already needs n (through hard or kept soft edges).
	all := s.SoftPre
	s.SoftPre = map[string][]string{}
	for _, n := range names {
		for _, d := range all[n] {
			if d != n && !slices.Contains(s.deps(d, true), n) {
				s.SoftPre[n] = append(s.SoftPre[n], d)
			}
		}
	}
	const (
		unseen = iota
		visiting
		done
	)
	state := map[string]int{}
	var order []*Module
	var visit func(n string) error
	visit = func(n string) error {
		switch state[n] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("dependency cycle at module %s", n)
		}
		state[n] = visiting
		for _, d := range append(s.before(n), s.SoftPre[n]...) {
			if err := visit(d); err != nil {
				return err
			}
		}
		state[n] = done
		order = append(order, s.Index.mods[n])
		return nil
	}
	for _, n := range names {
		if err := visit(n); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// deps returns the transitive load-before list of n in modules.dep order:
// each entry after the entries that need it, so loading from the end of
// the list to its start (as modprobe does) loads dependencies first.
// withSoft adds pre-softdeps (and their dependencies).
func (s *ModuleSet) deps(n string, withSoft bool) []string {
	seen := map[string]bool{n: true}
	var post []string // post-order: dependencies before dependents
	var walk func(string)
	walk = func(x string) {
		next := s.before(x)
		if withSoft {
			next = append(next, s.SoftPre[x]...)
		}
		for _, d := range next {
			if !seen[d] {
				seen[d] = true
				walk(d)
				post = append(post, d)
			}
		}
	}
	walk(n)
	slices.Reverse(post)
	return post
}

// WriteModulesDep writes modules.dep in depmod's format: one line per
// module, "path: dep-path dep-path ...", with the transitive dependencies
// listed so that the last needs none of the others.
//
// Pre-softdeps are appended to the module's dependencies: u-root's
// kmodule, which loads by modules.dep, ignores softdeps, and ext4 must find
// crc32c loaded. The softdeps are also written to modules.softdep.
func (s *ModuleSet) WriteModulesDep(w io.Writer) error {
	bw := bufio.NewWriter(w)
	for _, m := range s.Order {
		fmt.Fprintf(bw, "%s:", m.Path)
		for _, d := range s.deps(m.Name, true) {
			fmt.Fprintf(bw, " %s", s.Index.mods[d].Path)
		}
		bw.WriteString("\n")
	}
	return bw.Flush()
}

// WriteModulesSoftdep writes modules.softdep as depmod does:
// "softdep name pre: a b post: c".
func (s *ModuleSet) WriteModulesSoftdep(w io.Writer) error {
	bw := bufio.NewWriter(w)
	bw.WriteString("# Soft dependencies extracted from modules themselves.\n")
	for _, m := range s.Order {
		pre, post := s.SoftPre[m.Name], s.SoftPost[m.Name]
		if len(pre) == 0 && len(post) == 0 {
			continue
		}
		fmt.Fprintf(bw, "softdep %s", m.Name)
		if len(pre) > 0 {
			fmt.Fprintf(bw, " pre: %s", strings.Join(pre, " "))
		}
		if len(post) > 0 {
			fmt.Fprintf(bw, " post: %s", strings.Join(post, " "))
		}
		bw.WriteString("\n")
	}
	return bw.Flush()
}

// WriteModulesAlias writes modules.alias for the modules in the set.
func (s *ModuleSet) WriteModulesAlias(w io.Writer) error {
	bw := bufio.NewWriter(w)
	bw.WriteString("# Aliases extracted from modules themselves.\n")
	for _, m := range s.Order {
		for _, a := range m.Aliases {
			fmt.Fprintf(bw, "alias %s %s\n", a, m.Name)
		}
	}
	return bw.Flush()
}

// Names returns the module names in load order.
func (s *ModuleSet) Names() []string {
	out := make([]string, len(s.Order))
	for i, m := range s.Order {
		out[i] = m.Name
	}
	return out
}
