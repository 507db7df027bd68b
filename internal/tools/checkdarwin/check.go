package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/scanner"
	"go/token"
	"go/types"
	"go/version"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"sort"
	"strings"
	"sync"
)

// Options says what to check and how.
type Options struct {
	// Dir is the directory go list runs in (the module to check); empty
	// means the current directory.
	Dir string
	// Patterns are go list package patterns; empty means "./...".
	Patterns []string
	// GOOS and GOARCH are the target; empty means darwin/arm64.
	GOOS, GOARCH string
	// Tags are extra build tags.
	Tags []string
	// Tests includes the packages' _test.go files (as go vet does).
	Tests bool
	// Overlay is a go build -overlay JSON file; its replacements are used
	// both by go list and when reading sources.
	Overlay string
	// StdBodies checks the standard library's function bodies too (slow;
	// a stress test of the cgo handling, which the standard library's
	// cgo packages exercise).
	StdBodies bool
	// Logger receives progress; nil discards.
	Logger *slog.Logger
}

// Diagnostic is one error found, with its position.
type Diagnostic struct {
	Pos     token.Position // Filename is absolute; may be invalid for package-level errors
	Package string         // import path (go list ID) of the package it was found in
	Msg     string
}

func (d Diagnostic) String() string {
	if d.Pos.IsValid() {
		return fmt.Sprintf("%s: %s", d.Pos, d.Msg)
	}
	return fmt.Sprintf("%s: %s", d.Package, d.Msg)
}

// PackageResult records how one package was checked.
type PackageResult struct {
	ID         string // go list ImportPath, e.g. "p" or "p [p.test]"
	Standard   bool
	Root       bool // matched by the patterns (not only a dependency)
	Bodies     bool // function bodies were type-checked too
	Files      int  // Go files type-checked (GoFiles + CgoFiles)
	CgoFiles   int  // of which use cgo (import "C" faked)
	Suppressed int  // diagnostics dropped as artefacts of faking C
}

// Result is the outcome of a check.
type Result struct {
	Diagnostics []Diagnostic
	Packages    []PackageResult // sorted by ID
}

// listedPackage is the part of go list -json output the checker uses.
type listedPackage struct {
	ImportPath string
	Name       string
	Dir        string
	GoFiles    []string
	CgoFiles   []string
	Imports    []string
	ImportMap  map[string]string
	Standard   bool
	DepOnly    bool
	ForTest    string
	Module     *struct {
		Path      string
		Main      bool
		GoVersion string
	}
	Error *struct {
		Pos string
		Err string
	}
}

// Check type-checks the packages matched by opts.Patterns, and everything
// they import, for opts.GOOS/opts.GOARCH with cgo enabled and import "C"
// faked. Packages outside the standard library are checked with their
// function bodies; the standard library by its declarations only (it is
// trusted to build for every port; its declarations are what our code
// sees). It returns an error only when the check itself could not run.
func Check(ctx context.Context, opts Options) (*Result, error) {
	if opts.GOOS == "" {
		opts.GOOS = "darwin"
	}
	if opts.GOARCH == "" {
		opts.GOARCH = "arm64"
	}
	if len(opts.Patterns) == 0 {
		opts.Patterns = []string{"./..."}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	overlay, err := readOverlay(opts.Dir, opts.Overlay)
	if err != nil {
		return nil, err
	}
	pkgs, err := goList(ctx, opts)
	if err != nil {
		return nil, err
	}
	log.Debug("listed packages", "count", len(pkgs))

	sizes := types.SizesFor("gc", opts.GOARCH)
	if sizes == nil {
		return nil, fmt.Errorf("no type sizes for GOARCH %q", opts.GOARCH)
	}
	c := &checker{
		fset:      token.NewFileSet(),
		sizes:     sizes,
		overlay:   overlay,
		byID:      map[string]*node{},
		log:       log,
		stdBodies: opts.StdBodies,
		unsignedChar: opts.GOOS != "darwin" && opts.GOOS != "windows" &&
			map[string]bool{"arm": true, "arm64": true, "ppc64": true, "ppc64le": true, "s390x": true, "riscv64": true}[opts.GOARCH],
	}
	for _, p := range pkgs {
		if p.Name == "main" && p.ForTest == "" && strings.HasSuffix(p.ImportPath, ".test") {
			continue // generated test main: nothing of ours in it
		}
		c.byID[p.ImportPath] = &node{p: p, done: make(chan struct{})}
	}
	for _, n := range c.byID {
		c.wg.Add(1)
		go c.run(n)
	}
	c.wg.Wait()

	res := &Result{}
	for _, n := range c.byID {
		res.Diagnostics = append(res.Diagnostics, n.diags...)
		res.Packages = append(res.Packages, n.res)
	}
	sort.Slice(res.Packages, func(i, j int) bool { return res.Packages[i].ID < res.Packages[j].ID })
	res.Diagnostics = sortDiagnostics(res.Diagnostics)
	return res, nil
}

// sortDiagnostics orders ds by position and drops repeats.
func sortDiagnostics(ds []Diagnostic) []Diagnostic {
	sort.SliceStable(ds, func(i, j int) bool {
		a, b := ds[i].Pos, ds[j].Pos
		if a.Filename != b.Filename {
			return a.Filename < b.Filename
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		if a.Column != b.Column {
			return a.Column < b.Column
		}
		return ds[i].Msg < ds[j].Msg
	})
	// The same file can be checked in several variants (p and p [p.test]):
	// report each error once.
	out := ds[:0]
	seen := map[string]bool{}
	for _, d := range ds {
		k := d.Pos.String() + "\x00" + d.Msg
		if d.Pos.IsValid() && seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, d)
	}
	return out
}

// goList runs go list for the target platform.
func goList(ctx context.Context, opts Options) ([]*listedPackage, error) {
	args := []string{"list", "-e", "-deps",
		"-json=ImportPath,Name,Dir,GoFiles,CgoFiles,Imports,ImportMap,Standard,DepOnly,ForTest,Module,Error"}
	if opts.Tests {
		args = append(args, "-test")
	}
	if len(opts.Tags) > 0 {
		args = append(args, "-tags="+strings.Join(opts.Tags, ","))
	}
	if opts.Overlay != "" {
		args = append(args, "-overlay="+opts.Overlay)
	}
	args = append(args, "--")
	args = append(args, opts.Patterns...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = opts.Dir
	// cgo on, so that cgo files are listed (go list runs no C compiler).
	cmd.Env = append(os.Environ(), "GOOS="+opts.GOOS, "GOARCH="+opts.GOARCH, "CGO_ENABLED=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("listing packages (go %s): %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	var pkgs []*listedPackage
	dec := json.NewDecoder(&stdout)
	for {
		p := new(listedPackage)
		if err := dec.Decode(p); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("decoding go list output: %w", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs, nil
}

// readOverlay loads a go build overlay file: absolute path -> replacement
// ("" for a deleted file).
func readOverlay(dir, file string) (map[string]string, error) {
	if file == "" {
		return nil, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading overlay: %w", err)
	}
	var o struct{ Replace map[string]string }
	if err := json.Unmarshal(b, &o); err != nil {
		return nil, fmt.Errorf("parsing overlay %s: %w", file, err)
	}
	base, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("resolving overlay paths: %w", err)
	}
	abs := func(p string) string {
		if filepath.IsAbs(p) {
			return filepath.Clean(p)
		}
		return filepath.Join(base, p)
	}
	m := make(map[string]string, len(o.Replace))
	for k, v := range o.Replace {
		if v != "" {
			v = abs(v)
		}
		m[abs(k)] = v
	}
	return m, nil
}

type node struct {
	p     *listedPackage
	done  chan struct{}
	pkg   *types.Package // nil if it could not be checked at all
	diags []Diagnostic
	res   PackageResult
}

type checker struct {
	fset      *token.FileSet
	sizes     types.Sizes
	overlay   map[string]string
	byID      map[string]*node
	log       *slog.Logger
	stdBodies bool
	// unsignedChar: C's char is unsigned on the target (arm64 Linux,
	// not arm64 darwin).
	unsignedChar bool
	wg           sync.WaitGroup
	sem          chan struct{}
	semOnce      sync.Once
}

func (c *checker) acquire() func() {
	c.semOnce.Do(func() { c.sem = make(chan struct{}, runtime.GOMAXPROCS(0)) })
	c.sem <- struct{}{}
	return func() { <-c.sem }
}

// run checks n once all its imports are checked.
func (c *checker) run(n *node) {
	defer c.wg.Done()
	defer close(n.done)
	p := n.p
	n.res = PackageResult{ID: p.ImportPath, Standard: p.Standard, Root: !p.DepOnly}
	for _, imp := range p.Imports {
		if dep := c.byID[resolve(p, imp)]; dep != nil {
			<-dep.done
		}
	}
	release := c.acquire()
	defer release()

	if p.Error != nil {
		n.diags = append(n.diags, listError(p))
	}
	names := append(append([]string(nil), p.GoFiles...), p.CgoFiles...)
	if len(names) == 0 {
		return
	}
	var files []*ast.File
	for _, name := range names {
		path := filepath.Join(p.Dir, name)
		src, err := c.readSource(path)
		if err != nil {
			n.diags = append(n.diags, Diagnostic{Pos: token.Position{Filename: path}, Package: p.ImportPath, Msg: err.Error()})
			continue
		}
		f, err := parser.ParseFile(c.fset, path, src, parser.ParseComments|parser.SkipObjectResolution)
		if err != nil {
			var list scanner.ErrorList
			if errors.As(err, &list) {
				for _, e := range list {
					n.diags = append(n.diags, Diagnostic{Pos: e.Pos, Package: p.ImportPath, Msg: e.Msg})
				}
			} else {
				n.diags = append(n.diags, Diagnostic{Pos: token.Position{Filename: path}, Package: p.ImportPath, Msg: err.Error()})
			}
		}
		if f != nil {
			files = append(files, f)
		}
	}
	n.res.Files = len(files)
	n.res.CgoFiles = len(p.CgoFiles)
	n.res.Bodies = !p.Standard || c.stdBodies

	var errs []types.Error
	conf := types.Config{
		GoVersion:        goVersion(p),
		Sizes:            c.sizes,
		FakeImportC:      true,
		IgnoreFuncBodies: !n.res.Bodies,
		Importer:         importer{c: c, p: p},
		Error: func(err error) {
			te, ok := err.(types.Error)
			if !ok {
				n.diags = append(n.diags, Diagnostic{Package: p.ImportPath, Msg: err.Error()})
				return
			}
			errs = append(errs, te)
		},
	}
	info := &types.Info{
		Types: map[ast.Expr]types.TypeAndValue{},
		Defs:  map[*ast.Ident]types.Object{},
		Uses:  map[*ast.Ident]types.Object{},
	}
	n.pkg, _ = conf.Check(pkgPath(p), c.fset, files, info) // errors went to conf.Error
	var cgoTyped map[token.Pos]bool
	if len(errs) > 0 {
		cgoTyped = c.cgoTypedPositions(files, info)
	}
	for _, te := range errs {
		if cgoTyped[te.Pos] && operandTypeError(te) {
			n.res.Suppressed++
			c.log.Debug("suppressed cgo artefact", "pos", te.Fset.Position(te.Pos), "msg", te.Msg)
			continue
		}
		n.diags = append(n.diags, Diagnostic{Pos: te.Fset.Position(te.Pos), Package: p.ImportPath, Msg: te.Msg})
	}
	c.log.Debug("checked", "pkg", p.ImportPath, "files", len(files), "diagnostics", len(n.diags))
}

// cgoTypedPositions returns the start positions of the operands whose
// errors are artefacts of faking C.
//
// With FakeImportC every C.x is an invalid operand, and go/types reports
// nothing that follows from an invalid operand. But a declaration that
// mentions a C type (func F() *C.char, type char C.char) gets a type that
// is, or is built on, the invalid type, and values of that type are not
// invalid operands: go/types checks them like any other. Most checks
// accept an invalid type silently (assignability does), but conversions do
// not: (*char)(objc.GetUUID()) in vz, where both sides are C's char in
// real cgo, fails with "cannot convert ... (value with invalid type) to
// type *char". Two cases, and only these, are artefacts:
//
//   - the operand's own type is built on the invalid type (it comes from
//     C, and its real type is unknown here);
//   - the operand is a Go value converted to a type built on a C type:
//     when that C type is a scalar (char, int, size_t, ...) the conversion
//     is checked again with the Go type cgo gives it for the target
//     (int8, int32, uint64, ...), and it is an artefact only if that
//     succeeds; (*C.char)(p) is fine for p *int8 and an error for p *int.
//     For other C types (structs, typedefs of pointers) it cannot be
//     known and is treated as an artefact.
//
// Without cgo an invalid type only follows an error that is itself
// reported, so nothing real is lost. Errors at any other operand are
// reported, and so are, even at a C-typed operand, errors that do not
// depend on its type (undefined names, unused variables and imports, wrong
// argument counts, missing returns): see operandTypeError.
func (c *checker) cgoTypedPositions(files []*ast.File, info *types.Info) map[token.Pos]bool {
	m := map[token.Pos]bool{}
	for e, tv := range info.Types {
		if tv.IsValue() && builtOnInvalid(tv.Type, 0) {
			m[e.Pos()] = true
		}
	}
	specs := map[*types.TypeName]ast.Expr{}
	for _, f := range files {
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.TYPE {
				continue
			}
			for _, s := range gd.Specs {
				ts := s.(*ast.TypeSpec)
				if tn, ok := info.Defs[ts.Name].(*types.TypeName); ok {
					specs[tn] = ts.Type
				}
			}
		}
	}
	for _, f := range files {
		ast.Inspect(f, func(nd ast.Node) bool {
			call, ok := nd.(*ast.CallExpr)
			if !ok || len(call.Args) != 1 {
				return true
			}
			target, ok := info.Types[call.Fun]
			if !ok || !target.IsType() || !builtOnInvalid(target.Type, 0) {
				return true
			}
			arg := call.Args[0]
			if m[arg.Pos()] {
				return true // the operand is C-typed itself
			}
			operand, ok := info.Types[arg]
			if !ok {
				return true
			}
			goTarget, known := c.cType(call.Fun, info, specs, 0)
			if !known || types.ConvertibleTo(operand.Type, goTarget) {
				m[arg.Pos()] = true
			}
			return true
		})
	}
	return m
}

// cType returns the Go type cgo would give the type expression e, when e is
// built from C scalar types (through names, pointers and parentheses).
func (c *checker) cType(e ast.Expr, info *types.Info, specs map[*types.TypeName]ast.Expr, depth int) (types.Type, bool) {
	if depth > 10 {
		return nil, false
	}
	if tv, ok := info.Types[e]; ok && tv.IsType() && !builtOnInvalid(tv.Type, 0) {
		return tv.Type, true // plain Go
	}
	switch e := e.(type) {
	case *ast.ParenExpr:
		return c.cType(e.X, info, specs, depth+1)
	case *ast.StarExpr:
		t, ok := c.cType(e.X, info, specs, depth+1)
		if !ok {
			return nil, false
		}
		return types.NewPointer(t), true
	case *ast.SelectorExpr:
		id, ok := e.X.(*ast.Ident)
		if !ok {
			return nil, false
		}
		pn, ok := info.Uses[id].(*types.PkgName)
		if !ok || pn.Imported().Path() != "C" {
			return nil, false
		}
		return c.cScalar(e.Sel.Name)
	case *ast.Ident:
		tn, ok := info.Uses[e].(*types.TypeName)
		if !ok {
			return nil, false
		}
		if spec, ok := specs[tn]; ok {
			return c.cType(spec, info, specs, depth+1)
		}
	}
	return nil, false
}

// cScalar maps a C scalar type name to the Go type cgo uses for it on the
// target (cmd/cgo's gcc.go: sizes from the target's data model, char's
// signedness from its ABI).
func (c *checker) cScalar(name string) (types.Type, bool) {
	long := types.Int64
	ulong := types.Uint64
	if c.sizes.Sizeof(types.Typ[types.Uintptr]) == 4 {
		long, ulong = types.Int32, types.Uint32
	}
	char := types.Int8
	if c.unsignedChar {
		char = types.Uint8
	}
	kinds := map[string]types.BasicKind{
		"char": char, "schar": types.Int8, "uchar": types.Uint8,
		"short": types.Int16, "ushort": types.Uint16,
		"int": types.Int32, "uint": types.Uint32,
		"long": long, "ulong": ulong,
		"longlong": types.Int64, "ulonglong": types.Uint64,
		"float": types.Float32, "double": types.Float64,
		"size_t": ulong, "ssize_t": long, "uintptr_t": ulong, "intptr_t": long,
		"int8_t": types.Int8, "uint8_t": types.Uint8, "int16_t": types.Int16, "uint16_t": types.Uint16,
		"int32_t": types.Int32, "uint32_t": types.Uint32, "int64_t": types.Int64, "uint64_t": types.Uint64,
		"bool": types.Bool, "_Bool": types.Bool,
	}
	k, ok := kinds[name]
	if !ok {
		return nil, false
	}
	return types.Typ[k], true
}

// Error codes of go/types (internal/types/errors; their values are
// stable, x/tools relies on them too) for errors about an operand's type,
// the only kind a C-typed operand can cause spuriously.
var operandTypeCodes = map[int]string{
	23:  "IncompatibleAssign",
	45:  "UndefinedOp",
	46:  "MismatchedTypes",
	48:  "NonNumericIncDec",
	49:  "UnaddressableOperand",
	50:  "InvalidIndirection",
	51:  "NonIndexableOperand",
	52:  "InvalidIndex",
	55:  "InvalidSliceExpr",
	58:  "InvalidReceive",
	59:  "InvalidSend",
	84:  "InvalidCap",
	90:  "InvalidLen",
	94:  "InvalidAssert",
	96:  "InvalidConversion",
	97:  "InvalidUntypedConversion",
	105: "InvalidCond",
	109: "InvalidRangeExpr",
	127: "InvalidCall",
}

// operandTypeError reports whether te is about its operand's type.
func operandTypeError(te types.Error) bool {
	if code, ok := errorCode(te); ok {
		_, ok := operandTypeCodes[code]
		return ok
	}
	// No code (a future go/types): the messages of such errors name the
	// operand's invalid type.
	return strings.Contains(te.Msg, "with invalid type")
}

// errorCode reads the code go/types keeps, unexported, in every error (its
// documentation invites reading it by reflection).
func errorCode(te types.Error) (int, bool) {
	f := reflect.ValueOf(te).FieldByName("go116code")
	if !f.IsValid() || !f.CanInt() {
		return 0, false
	}
	return int(f.Int()), true
}

// builtOnInvalid reports whether t is the invalid type or is made from it
// by naming, pointers and element types.
func builtOnInvalid(t types.Type, depth int) bool {
	if t == nil || depth > 10 {
		return false
	}
	switch t := t.(type) {
	case *types.Basic:
		return t.Kind() == types.Invalid
	case *types.Named:
		return builtOnInvalid(t.Underlying(), depth+1)
	case *types.Alias:
		return builtOnInvalid(types.Unalias(t), depth+1)
	case *types.Pointer:
		return builtOnInvalid(t.Elem(), depth+1)
	case *types.Slice:
		return builtOnInvalid(t.Elem(), depth+1)
	case *types.Array:
		return builtOnInvalid(t.Elem(), depth+1)
	case *types.Chan:
		return builtOnInvalid(t.Elem(), depth+1)
	case *types.Map:
		return builtOnInvalid(t.Key(), depth+1) || builtOnInvalid(t.Elem(), depth+1)
	}
	return false
}

func listError(p *listedPackage) Diagnostic {
	d := Diagnostic{Package: p.ImportPath, Msg: p.Error.Err}
	if p.Error.Pos != "" {
		d.Pos = parsePos(p.Error.Pos, p.Dir)
	}
	return d
}

// parsePos parses go list's "file:line:col" error positions.
func parsePos(s, dir string) token.Position {
	var pos token.Position
	parts := strings.Split(s, ":")
	// file may itself contain ':'; line and column are the trailing numbers.
	nums := []int{}
	for len(parts) > 1 && len(nums) < 2 {
		var v int
		if _, err := fmt.Sscanf(parts[len(parts)-1], "%d", &v); err != nil {
			break
		}
		nums = append([]int{v}, nums...)
		parts = parts[:len(parts)-1]
	}
	pos.Filename = strings.Join(parts, ":")
	if !filepath.IsAbs(pos.Filename) {
		pos.Filename = filepath.Join(dir, pos.Filename)
	}
	if len(nums) > 0 {
		pos.Line = nums[0]
	}
	if len(nums) > 1 {
		pos.Column = nums[1]
	}
	return pos
}

func (c *checker) readSource(path string) ([]byte, error) {
	if r, ok := c.overlay[path]; ok {
		if r == "" {
			return nil, fmt.Errorf("file deleted by overlay")
		}
		path = r
	}
	return os.ReadFile(path)
}

// pkgPath is the package path types sees: go list's ID without the test
// variant suffix ("p [p.test]" -> "p").
func pkgPath(p *listedPackage) string {
	path, _, _ := strings.Cut(p.ImportPath, " ")
	return path
}

func goVersion(p *listedPackage) string {
	if p.Standard {
		return "" // the toolchain's own version
	}
	v := "1.16" // what the go command assumes for modules without a go line
	if p.Module != nil && p.Module.GoVersion != "" {
		v = p.Module.GoVersion
	}
	return version.Lang("go" + v)
}

// resolve maps an import path as written in p's source to a go list ID.
func resolve(p *listedPackage, path string) string {
	if id, ok := p.ImportMap[path]; ok {
		return id
	}
	return path
}

type importer struct {
	c *checker
	p *listedPackage
}

func (im importer) Import(path string) (*types.Package, error) {
	return im.ImportFrom(path, im.p.Dir, 0)
}

func (im importer) ImportFrom(path, _ string, _ types.ImportMode) (*types.Package, error) {
	if path == "unsafe" {
		return types.Unsafe, nil
	}
	n := im.c.byID[resolve(im.p, path)]
	if n == nil {
		return nil, fmt.Errorf("package %q is not in the build for this platform", path)
	}
	<-n.done // already closed: run waits for every import first
	if n.pkg == nil {
		return nil, fmt.Errorf("package %q could not be checked", path)
	}
	return n.pkg, nil
}
