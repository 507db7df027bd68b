// Command checkdarwin type-checks the module for macOS (darwin/arm64) on any
// host. cgo cannot build for darwin here (Code-Hex/vz needs Apple's SDK),
// so it lists the packages with the go command for GOOS=darwin
// GOARCH=arm64 CGO_ENABLED=1 (cgo files included; go list runs no C
// compiler), parses them, and type-checks them from source with go/types,
// import "C" faked (types.Config.FakeImportC). That catches every Go type
// error in darwin-only code and in its use of dependencies' APIs (vz's
// included), though nothing about the C side.
//
// Usage:
//
//	go run ./internal/tools/checkdarwin [-C dir] [-goos darwin] [-goarch arm64] [-tags t1,t2] [-tests=true] [-overlay file.json] [-v] [packages]
//
// Packages default to ./... . It prints every error as file:line:col:
// message and exits 1 if there is any, 0 when clean, 2 when the check
// cannot run.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("checkdarwin", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var opts Options
	var tags string
	var verbose bool
	fs.StringVar(&opts.Dir, "C", "", "run in this directory (the module to check)")
	fs.StringVar(&opts.GOOS, "goos", "darwin", "target GOOS")
	fs.StringVar(&opts.GOARCH, "goarch", "arm64", "target GOARCH")
	fs.StringVar(&tags, "tags", "", "comma-separated extra build tags")
	fs.BoolVar(&opts.Tests, "tests", true, "also check _test.go files")
	fs.StringVar(&opts.Overlay, "overlay", "", "go build -overlay JSON file")
	fs.BoolVar(&opts.StdBodies, "std-bodies", false, "also check the standard library's function bodies (slow)")
	fs.BoolVar(&verbose, "v", false, "list the packages checked")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if tags != "" {
		opts.Tags = strings.Split(tags, ",")
	}
	opts.Patterns = fs.Args()
	if verbose {
		opts.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	start := time.Now()
	res, err := Check(ctx, opts)
	if err != nil {
		fmt.Fprintf(stderr, "checkdarwin: %v\n", err)
		return 2
	}
	wd, _ := filepath.Abs(opts.Dir)
	for _, d := range res.Diagnostics {
		if rel, err := filepath.Rel(wd, d.Pos.Filename); err == nil && d.Pos.IsValid() && !strings.HasPrefix(rel, "..") {
			d.Pos.Filename = rel
		}
		fmt.Fprintln(stdout, d)
	}
	var roots, bodies, cgo int
	for _, p := range res.Packages {
		if p.Root {
			roots++
		}
		if p.Bodies {
			bodies++
		}
		if p.CgoFiles > 0 {
			cgo++
		}
		if verbose && !p.Standard {
			fmt.Fprintf(stderr, "checked %s (%d files, %d cgo)\n", p.ID, p.Files, p.CgoFiles)
		}
	}
	summary := fmt.Sprintf("%s/%s: %d packages (%d matched, %d with function bodies, %d using cgo) in %.1fs",
		opts.GOOS, opts.GOARCH, len(res.Packages), roots, bodies, cgo, time.Since(start).Seconds())
	if n := len(res.Diagnostics); n > 0 {
		fmt.Fprintf(stderr, "checkdarwin: %d type errors; %s\n", n, summary)
		return 1
	}
	if verbose {
		fmt.Fprintf(stderr, "checkdarwin: ok; %s\n", summary)
	}
	return 0
}
