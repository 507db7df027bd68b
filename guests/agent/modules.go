package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
)

// ModuleName returns the kernel's name for a module given as a name or a
// path: the base name without .ko (and a compression suffix), with '-'
// replaced by '_' as the kernel does.
func ModuleName(s string) string {
	s = path.Base(s)
	for _, suf := range []string{".xz", ".gz", ".zst"} {
		s = strings.TrimSuffix(s, suf)
	}
	s = strings.TrimSuffix(s, ".ko")
	return strings.ReplaceAll(s, "-", "_")
}

// ModuleDB is the module index of one kernel: modules.dep (depmod format,
// "path: dep-path dep-path...") and modules.builtin. It loads modules in
// dependency order, independent ones concurrently, each at most once.
// Methods are safe for concurrent use.
type ModuleDB struct {
	dir     string              // /lib/modules/<release>
	paths   map[string]string   // name -> path relative to dir
	deps    map[string][]string // name -> names it depends on
	builtin map[string]bool

	mu    sync.Mutex
	state map[string]*modState
}

type modState struct {
	once sync.Once
	err  error
}

// ParseModuleDB parses modules.dep and (optionally nil) modules.builtin of
// the kernel whose module directory is dir.
func ParseModuleDB(dir string, dep, builtin io.Reader) (*ModuleDB, error) {
	db := &ModuleDB{
		dir:     dir,
		paths:   map[string]string{},
		deps:    map[string][]string{},
		builtin: map[string]bool{},
		state:   map[string]*modState{},
	}
	s := bufio.NewScanner(dep)
	s.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; s.Scan(); n++ {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		p, rest, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("parsing modules.dep line %d: no colon", n)
		}
		p = strings.TrimSpace(p)
		name := ModuleName(p)
		db.paths[name] = p
		var ds []string
		for _, d := range strings.Fields(rest) {
			ds = append(ds, ModuleName(d))
		}
		db.deps[name] = ds
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("reading modules.dep: %w", err)
	}
	if builtin != nil {
		s := bufio.NewScanner(builtin)
		for s.Scan() {
			if l := strings.TrimSpace(s.Text()); l != "" {
				db.builtin[ModuleName(l)] = true
			}
		}
		if err := s.Err(); err != nil {
			return nil, fmt.Errorf("reading modules.builtin: %w", err)
		}
	}
	if err := db.checkCycles(); err != nil {
		return nil, err
	}
	return db, nil
}

// checkCycles rejects an index whose dependencies loop, which would
// otherwise deadlock Load.
func (db *ModuleDB) checkCycles() error {
	const (
		visiting = 1
		done     = 2
	)
	mark := map[string]int{}
	var visit func(n string, stack []string) error
	visit = func(n string, stack []string) error {
		switch mark[n] {
		case visiting:
			return fmt.Errorf("parsing modules.dep: dependency cycle %s", strings.Join(append(stack, n), " -> "))
		case done:
			return nil
		}
		mark[n] = visiting
		for _, d := range db.deps[n] {
			if err := visit(d, append(stack, n)); err != nil {
				return err
			}
		}
		mark[n] = done
		return nil
	}
	for n := range db.deps {
		if err := visit(n, nil); err != nil {
			return err
		}
	}
	return nil
}

// OpenModuleDB reads dir/modules.dep and, if present, dir/modules.builtin.
func OpenModuleDB(dir string) (*ModuleDB, error) {
	dep, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("opening module index: %w", err)
	}
	defer dep.Close()
	var builtin io.Reader
	if f, err := os.Open(filepath.Join(dir, "modules.builtin")); err == nil {
		defer f.Close()
		builtin = f
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("opening module index: %w", err)
	}
	return ParseModuleDB(dir, dep, builtin)
}

// Dir returns the module directory the index describes.
func (db *ModuleDB) Dir() string { return db.dir }

// Has reports whether the index knows name, as a module file or built in.
func (db *ModuleDB) Has(name string) bool {
	name = ModuleName(name)
	_, ok := db.paths[name]
	return ok || db.builtin[name]
}

// LoadFunc loads one module file (absolute path) whose dependencies are
// already loaded. It must treat "already loaded" as success.
type LoadFunc func(ctx context.Context, name, path string) error

// Load loads the named modules and everything they depend on with load:
// each module after its dependencies, independent modules concurrently,
// each module once per ModuleDB (a failed load is not retried). Built-in
// modules and those for which present reports true are skipped. A name the
// index does not know is skipped if present reports true and is an error
// otherwise. Errors for several modules are joined.
func (db *ModuleDB) Load(ctx context.Context, names []string, present func(name string) bool, load LoadFunc) error {
	if present == nil {
		present = func(string) bool { return false }
	}
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	for i, n := range names {
		name := ModuleName(n)
		if _, ok := db.paths[name]; !ok {
			if db.builtin[name] || present(name) {
				continue
			}
			errs[i] = fmt.Errorf("module %s: not in %s/modules.dep", name, db.dir)
			continue
		}
		wg.Go(func() { errs[i] = db.loadOne(ctx, name, present, load) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (db *ModuleDB) loadOne(ctx context.Context, name string, present func(string) bool, load LoadFunc) error {
	db.mu.Lock()
	st := db.state[name]
	if st == nil {
		st = &modState{}
		db.state[name] = st
	}
	db.mu.Unlock()
	st.once.Do(func() {
		if db.builtin[name] || present(name) {
			return
		}
		deps := db.deps[name]
		errs := make([]error, len(deps))
		var wg sync.WaitGroup
		for i, d := range deps {
			if _, ok := db.paths[d]; !ok {
				if !db.builtin[d] && !present(d) {
					errs[i] = fmt.Errorf("module %s: dependency %s not in modules.dep", name, d)
				}
				continue
			}
			wg.Go(func() { errs[i] = db.loadOne(ctx, d, present, load) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			st.err = err
			return
		}
		if err := ctx.Err(); err != nil {
			st.err = fmt.Errorf("module %s: %w", name, err)
			return
		}
		p := db.paths[name]
		if !filepath.IsAbs(p) {
			p = filepath.Join(db.dir, p)
		}
		if err := load(ctx, name, p); err != nil {
			st.err = fmt.Errorf("loading module %s: %w", name, err)
		}
	})
	return st.err
}
