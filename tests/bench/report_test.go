//go:build linux

package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qmount/qmount/guests/agent"
	"github.com/qmount/qmount/internal/wire"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{2, 2, 9}, 2},
	} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median(nil) is not NaN")
	}
}

// TestReport builds a report from known figures and checks the ratios to
// the kernel and to the best peer, in both directions of "better", and
// that the Markdown and JSON carry them.
func TestReport(t *testing.T) {
	res := []*methodResult{
		{m: &method{key: "kernel", name: "kernel", kind: kindKernel}, runs: map[string][]float64{
			"read_big": {600, 700, 650}, "mount": {0.05, 0.05, 0.05}}},
		{m: &method{key: "qmount", name: "qmount", kind: kindQmount}, runs: map[string][]float64{
			"read_big": {300, 330, 320}, "mount": {2, 3, 2.5}}},
		{m: &method{key: "guestmount", name: "guestmount", kind: kindPeer}, runs: map[string][]float64{
			"read_big": {20, 18, 19}, "mount": {20, 22, 21}}},
		{m: &method{key: "fuse2fs", name: "fuse2fs", kind: kindPeer}, runs: map[string][]float64{
			"read_big": {400, 500, 450}, "mount": {0.1, 0.1, 0.1}}},
		{m: &method{key: "qmount-mini", name: "qmount --guest mini", kind: kindQmount}, skipped: "mini guest not built"},
	}
	rep := buildReport(res, fullSizes, false, "2026-01-01", map[string]string{"description": "test box"})
	for _, tc := range []struct {
		method, metric string
		median         float64
		vsKernel       float64 // NaN: none
		vsPeer         float64
		peer           string
	}{
		{"qmount", "read_big", 320, 320.0 / 650, 320.0 / 450, "fuse2fs"},
		{"qmount", "mount", 2.5, 2.5 / 0.05, 2.5 / 0.1, "fuse2fs"},
		{"guestmount", "read_big", 19, 19.0 / 650, 19.0 / 450, "fuse2fs"},
		{"fuse2fs", "read_big", 450, 450.0 / 650, 1, "fuse2fs"},
		{"kernel", "read_big", 650, math.NaN(), 650.0 / 450, "fuse2fs"},
	} {
		c := rep.find(tc.method, tc.metric)
		if c == nil {
			t.Fatalf("no %s/%s in the report", tc.method, tc.metric)
		}
		if c.Median != tc.median {
			t.Errorf("%s/%s median %v, want %v", tc.method, tc.metric, c.Median, tc.median)
		}
		if math.IsNaN(tc.vsKernel) != (c.VsKernel == nil) || (c.VsKernel != nil && math.Abs(*c.VsKernel-tc.vsKernel) > 1e-9) {
			t.Errorf("%s/%s vs kernel %v, want %v", tc.method, tc.metric, c.VsKernel, tc.vsKernel)
		}
		if c.VsBestPeer == nil || math.Abs(*c.VsBestPeer-tc.vsPeer) > 1e-9 || c.BestPeer != tc.peer {
			t.Errorf("%s/%s vs best peer %v (%s), want %v (%s)", tc.method, tc.metric, c.VsBestPeer, c.BestPeer, tc.vsPeer, tc.peer)
		}
	}
	if c := rep.find("qmount-mini", "read_big"); c != nil {
		t.Errorf("a skipped method has figures: %+v", c)
	}

	md := rep.markdown(3)
	for _, want := range []string{
		"| cold read, one 256 MiB file | MB/s ↑ | 650 | 320 | 19.0 | 450 |",
		"| read_big | 0.49x | 0.71x | 0.029x | 0.042x | 0.69x | 1.00x |",
		"**qmount --guest mini**: not measured: mini guest not built.",
		"test box",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}

	dir := t.TempDir()
	if err := rep.write(filepath.Join(dir, "r.json"), filepath.Join(dir, "r.md"), md); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "r.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		Results []struct {
			Method, Metric, Unit string
			Median               float64
			Runs                 []float64
		}
	}
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range back.Results {
		if r.Method == "guestmount" && r.Metric == "mount" {
			found = true
			if r.Median != 21 || r.Unit != "s" || len(r.Runs) != 3 {
				t.Errorf("guestmount mount in JSON: %+v", r)
			}
		}
	}
	if !found {
		t.Error("results.json lacks guestmount/mount")
	}
}

// TestParseTimeline parses the line the guest agent itself formats.
func TestParseTimeline(t *testing.T) {
	line := agent.FormatTimeline(wire.Timeline{Init: 1200, Modules: 1500, Connected: 1600, Mounted: 1900, Serving: 1910})
	console := "[    1.2] Run /init as init process\nqmount-init: " + line + "\nqmount-init: first 9P byte at 1950 ms\n"
	tl, ok := parseTimeline([]byte(console))
	if !ok {
		t.Fatalf("no timeline found in %q", console)
	}
	want := map[string]int{"init": 1200, "modules": 1500, "connected": 1600, "mounted": 1900, "serving": 1910, "first9p": 1950}
	for k, v := range want {
		if tl[k] != v {
			t.Errorf("%s = %d, want %d (all: %v)", k, tl[k], v, tl)
		}
	}
	if _, ok := parseTimeline([]byte("no such line\n")); ok {
		t.Error("found a timeline in a console without one")
	}
}
