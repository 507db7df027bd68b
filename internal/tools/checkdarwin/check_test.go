package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// moduleRoot is the qmount module's directory.
func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func pkgByID(res *Result, id string) (PackageResult, bool) {
	for _, p := range res.Packages {
		if p.ID == id {
			return p, true
		}
	}
	return PackageResult{}, false
}

// The real module checks clean for darwin/arm64, and the check really
// covers our vz driver and vz itself, function bodies and cgo included.
func TestRealModule(t *testing.T) {
	root := moduleRoot(t)
	res, err := Check(context.Background(), Options{Dir: root, Patterns: []string{"./..."}, Tests: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"github.com/qmount/qmount/vmm/vz", "github.com/Code-Hex/vz/v3", "github.com/Code-Hex/vz/v3/internal/objc"} {
		p, ok := pkgByID(res, id)
		if !ok {
			t.Fatalf("%s was not checked", id)
		}
		if !p.Bodies || p.Files == 0 {
			t.Errorf("%s: checked without bodies or files: %+v", id, p)
		}
	}
	if p, _ := pkgByID(res, "github.com/qmount/qmount/vmm/vz"); !p.Root {
		t.Errorf("vmm/vz not matched by ./...: %+v", p)
	}
	if p, _ := pkgByID(res, "github.com/Code-Hex/vz/v3"); p.CgoFiles < 10 {
		t.Errorf("vz checked with %d cgo files; want its cgo files included", p.CgoFiles)
	}
	// vz v3.7.1 has one known artefact of faking C, (*char)(objc.GetUUID())
	// in virtualization.go: it must be recognised, not reported.
	if p, _ := pkgByID(res, "github.com/Code-Hex/vz/v3"); p.Suppressed != 1 {
		t.Errorf("vz: %d errors suppressed as cgo artefacts, want 1", p.Suppressed)
	}
	var mine, others []string
	for _, d := range res.Diagnostics {
		if strings.Contains(d.Pos.Filename, "/vmm/vz/") || strings.Contains(d.Pos.Filename, "Code-Hex") {
			mine = append(mine, d.String())
		} else {
			others = append(others, d.String())
		}
	}
	if len(mine) > 0 {
		t.Fatalf("vmm/vz or vz does not type-check for darwin/arm64:\n%s", strings.Join(mine, "\n"))
	}
	if len(others) > 0 {
		t.Errorf("the module does not type-check for darwin/arm64 (%d errors):\n%s", len(others), strings.Join(others, "\n"))
	}
}

// A type error planted in a darwin-only file of vmm/vz fails the command
// with exit code 1, naming the file and line; one planted in a linux-only
// file is not reported (it is not part of the darwin build).
func TestPlantedError(t *testing.T) {
	root := moduleRoot(t)
	tmp := t.TempDir()
	darwinSrc := `package vz

import vzf "github.com/Code-Hex/vz/v3"

func planted() error {
	// The socket device's Connect takes a uint32 port.
	_, err := (*vzf.VirtioSocketDevice)(nil).Connect("qmount.ctl")
	return err
}
`
	linuxSrc := "package vz\n\nvar plantedLinux int = \"not darwin\"\n"
	overlay := map[string]string{
		filepath.Join(root, "vmm/vz/planted_darwin.go"): write(t, tmp, "d.go", darwinSrc),
		filepath.Join(root, "vmm/vz/planted_linux.go"):  write(t, tmp, "l.go", linuxSrc),
	}
	b, _ := json.Marshal(map[string]any{"Replace": overlay})
	ovl := write(t, tmp, "overlay.json", string(b))

	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"-C", root, "-overlay", ovl, "./vmm/..."}, &stdout, &stderr)
	if code != 1 {
		t.Fatalf("exit code %d, want 1; stdout:\n%s\nstderr:\n%s", code, &stdout, &stderr)
	}
	want := "vmm/vz/planted_darwin.go:7:"
	if !strings.HasPrefix(stdout.String(), want) || !strings.Contains(stdout.String(), "cannot use \"qmount.ctl\"") {
		t.Errorf("stdout %q, want it to start with %q and name the bad argument", stdout.String(), want)
	}
	if strings.Contains(stdout.String(), "planted_linux") {
		t.Errorf("linux-only file reported for darwin:\n%s", &stdout)
	}
	if n := strings.Count(stdout.String(), "\n"); n != 1 {
		t.Errorf("%d lines of errors, want 1:\n%s", n, &stdout)
	}

	// Without the planted error the same run exits 0.
	stdout.Reset()
	stderr.Reset()
	if code := run(context.Background(), []string{"-C", root, "./vmm/..."}, &stdout, &stderr); code != 0 {
		t.Errorf("clean run: exit code %d; stdout:\n%s\nstderr:\n%s", code, &stdout, &stderr)
	}
}

func write(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// A small module that uses cgo the ways vz does: the artefacts of faking
// C are dropped, every real error, even right next to C, is reported.
func TestCgoArtefactsAndRealErrors(t *testing.T) {
	dir := t.TempDir()
	if d := os.Getenv("CHECKDARWIN_KEEP"); d != "" {
		dir = d // to look at the module afterwards: go run . -C $CHECKDARWIN_KEEP -v ./...
	}
	write(t, dir, "go.mod", "module example.com/cgofake\n\ngo 1.22\n")
	// A cgo package whose API has a C type, as vz's internal/objc does.
	write(t, dir, "cstr/cstr.go", `package cstr

/*
static char *name(void) { return "x"; }
*/
import "C"

// CName's result type is C's: invalid under FakeImportC.
func CName() *C.char { return C.name() }
`)
	write(t, dir, "c.go", `package cgofake

/*
#include <stdlib.h>
typedef struct { int a; } thing;
static char *name(void) { return "x"; }
static int twice(int x) { return 2 * x; }
#define LIMIT 4
*/
import "C"

import (
	"unsafe"

	"example.com/cgofake/cstr"
)

type char C.char

func CName() *C.char { return C.name() }

func Name() string { return C.GoString(C.name()) }

func Wrap() *char {
	cs := (*char)(cstr.CName()) // artefact: C-typed operand (vz's case)
	return cs
}

func Local() *char { return (*char)(CName()) }

func Int8(p *int8) *char { return (*char)(p) } // artefact: *C.char is *int8 for cgo

func Ptr(p *int8) *char { return (*char)(unsafe.Pointer(p)) }

func Twice(x int) int { return int(C.twice(C.int(x))) }

func Thing() int {
	var t C.thing
	t.a = 3
	return int(t.a)
}

func Free(p *C.char) { C.free(unsafe.Pointer(p)) }

func Limit() int { return C.LIMIT }
`)
	// A package without cgo that uses a C-typed API of another.
	write(t, dir, "use/use.go", `package use

import (
	"unsafe"

	"example.com/cgofake/cstr"
)

func Ptr() unsafe.Pointer { return unsafe.Pointer(cstr.CName()) } // artefact
`)
	// Real errors, next to C, in a package of their own (after a
	// package's first error go/types itself drops errors that mention an
	// invalid type, which would hide the artefacts above).
	write(t, dir, "bad/bad_darwin.go", `package bad

import "C"

import "example.com/cgofake/cstr"

type char C.char

func CName() *C.char { return cstr.CName() }

func one(int) {}

func bad1() int { return "not an int" }

func bad2() { one(1, CName()) }

func bad3() { x := CName() }

func bad4() { _ = C.twice(undefinedName) }

func bad5() *char { return (*char)(badPtr) }

var badPtr *int = nil
`)
	write(t, dir, "bad/bad_linux.go", "package bad\n\nvar notDarwin int = \"x\"\n")

	res, err := Check(context.Background(), Options{Dir: dir, Patterns: []string{"./..."}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range res.Diagnostics {
		got = append(got, fmt.Sprintf("%s:%d: %s", filepath.Base(d.Pos.Filename), d.Pos.Line, d.Msg))
	}
	want := []string{
		"bad_darwin.go:13: cannot use \"not an int\" (untyped string constant) as int value in return statement",
		"bad_darwin.go:15: too many arguments in call to one\n\thave (number, unknown type)\n\twant (int)",
		"bad_darwin.go:17: declared and not used: x",
		"bad_darwin.go:19: undefined: undefinedName",
		"bad_darwin.go:21: cannot convert badPtr (variable of type *int) to type *char",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("diagnostics:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	suppressed := map[string]int{}
	for _, p := range res.Packages {
		suppressed[p.ID] = p.Suppressed
	}
	if suppressed["example.com/cgofake"] != 2 || suppressed["example.com/cgofake/use"] != 1 || suppressed["example.com/cgofake/cstr"] != 0 {
		t.Errorf("suppressed: cgofake %d, cgofake/use %d, cgofake/cstr %d; want 2, 1, 0",
			suppressed["example.com/cgofake"], suppressed["example.com/cgofake/use"], suppressed["example.com/cgofake/cstr"])
	}
}

// The filter reads go/types' error codes by reflection; if a Go release
// changes that, this fails rather than the filter silently degrading.
func TestErrorCodes(t *testing.T) {
	src := `package p

func f(int) {}

var _ = int("x")
var _ = func() { f(1, 2) }
`
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "p.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	var codes []int
	conf := types.Config{Error: func(err error) {
		code, ok := errorCode(err.(types.Error))
		if !ok {
			t.Fatalf("no error code readable from %v", err)
		}
		codes = append(codes, code)
	}}
	conf.Check("p", fset, []*ast.File{f}, nil)
	if fmt.Sprint(codes) != "[96 126]" { // InvalidConversion, WrongArgCount
		t.Fatalf("codes %v, want [96 126]", codes)
	}
	if _, ok := operandTypeCodes[96]; !ok {
		t.Error("InvalidConversion is not an operand type error")
	}
	if _, ok := operandTypeCodes[126]; ok {
		t.Error("WrongArgCount must never be suppressed")
	}
}
