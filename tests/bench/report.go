//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// metric is one row of the report.
type metric struct {
	Key, Label, Unit string
	Higher           bool // higher is better
}

// metricsFor names the rows with the run's sizes.
func metricsFor(sz sizes) []metric {
	return []metric{
		{"mount", "mount latency (start to first readdir of the root)", "s", false},
		{"unmount", "unmount latency (to a consistent image, tool exited)", "s", false},
		{"read_files", fmt.Sprintf("cold read, %d x 1 MiB files", sz.SmallFiles), "MB/s", true},
		{"read_big", fmt.Sprintf("cold read, one %d MiB file", sz.BigMiB), "MB/s", true},
		{"fio_read", fmt.Sprintf("fio sequential read of a %d MiB file, 1 MiB blocks, cold", sz.SeqMiB), "MB/s", true},
		{"fio_randread", fmt.Sprintf("fio random read in a %d MiB file, 4 KiB blocks, cold, %d s", sz.RandMiB, sz.RandSec), "IOPS", true},
		{"fio_write", fmt.Sprintf("fio sequential write, 1 MiB blocks, end_fsync (%d MiB or %d s)", sz.FioWriteMiB, sz.FioWriteSec), "MB/s", true},
		{"create", fmt.Sprintf("create %d x 4 KiB files + syncfs", sz.Creates), "files/s", true},
		{"find", fmt.Sprintf("find over %d entries, cold", sz.TreeEntries), "entries/s", true},
		{"stat", fmt.Sprintf("stat of %d entries by path, cold", sz.TreeEntries), "entries/s", true},
		{"tar", fmt.Sprintf("tar -x of a %d-file source tree + sync -f", sz.TarFiles), "files/s", true},
		{"cpu", "host CPU time of the serving processes, per run", "s", false},
		{"rss", "peak RSS of the VM (else of the serving process)", "MiB", false},
	}
}

// median of v (the mean of the middle two for an even count).
func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// methodResult is one method's outcome.
type methodResult struct {
	m    *method
	runs map[string][]float64 // metric key -> values
	// phaseErrs holds the first error of each phase that failed.
	phaseErrs map[string]string
	failed    string // why the method failed part-way, if it did
	accel     string
	tl        []map[string]int // boot timelines (qmount)
	verify    string           // "ok" or the verification failure
	skipped   string
}

// cell is one JSON object: a method's figure for a metric.
type cell struct {
	Method     string    `json:"method"`
	Metric     string    `json:"metric"`
	Label      string    `json:"label"`
	Unit       string    `json:"unit"`
	Better     string    `json:"better"`
	Median     float64   `json:"median"`
	Runs       []float64 `json:"runs"`
	VsKernel   *float64  `json:"vs_kernel,omitempty"`
	VsBestPeer *float64  `json:"vs_best_peer,omitempty"`
	BestPeer   string    `json:"best_peer,omitempty"`
}

// report is results.json.
type report struct {
	Date     string                        `json:"date"`
	Machine  map[string]string             `json:"machine"`
	Quick    bool                          `json:"quick"`
	Sizes    sizes                         `json:"sizes"`
	Results  []cell                        `json:"results"`
	Methods  []methodInfo                  `json:"methods"`
	Timeline map[string]map[string]float64 `json:"boot_timeline_ms,omitempty"`
}

type methodInfo struct {
	Key string `json:"key"`
	// PhaseErrors holds the first error of each metric that failed.
	PhaseErrors map[string]string `json:"phase_errors,omitempty"`
	Name        string            `json:"name"`
	Note        string            `json:"note"`
	Accel       string            `json:"accel,omitempty"`
	Skipped     string            `json:"skipped,omitempty"`
	Failed      string            `json:"failed,omitempty"`
	Verify      string            `json:"verify,omitempty"`
}

// bestPeer returns the best peer median for a metric and whose it is.
func bestPeer(res []*methodResult, mt metric) (float64, string) {
	best, who := math.NaN(), ""
	for _, r := range res {
		if r.m.kind != kindPeer || r.failed != "" {
			continue
		}
		v := median(r.runs[mt.Key])
		if math.IsNaN(v) {
			continue
		}
		if math.IsNaN(best) || (mt.Higher && v > best) || (!mt.Higher && v < best) {
			best, who = v, r.m.key
		}
	}
	return best, who
}

func kernelMedian(res []*methodResult, mt metric) float64 {
	for _, r := range res {
		if r.m.kind == kindKernel && r.failed == "" {
			return median(r.runs[mt.Key])
		}
	}
	return math.NaN()
}

func ratio(a, b float64) *float64 {
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
		return nil
	}
	v := a / b
	return &v
}

// buildReport turns the results into results.json's document.
func buildReport(res []*methodResult, sz sizes, quick bool, date string, machine map[string]string) *report {
	rep := &report{Date: date, Machine: machine, Quick: quick, Sizes: sz}
	for _, mt := range metricsFor(sz) {
		k := kernelMedian(res, mt)
		bp, who := bestPeer(res, mt)
		for _, r := range res {
			v := r.runs[mt.Key]
			if len(v) == 0 {
				continue
			}
			c := cell{Method: r.m.key, Metric: mt.Key, Label: mt.Label, Unit: mt.Unit, Median: median(v), Runs: v, Better: "lower"}
			if mt.Higher {
				c.Better = "higher"
			}
			if r.m.kind != kindKernel {
				c.VsKernel = ratio(c.Median, k)
			}
			if c.VsBestPeer = ratio(c.Median, bp); c.VsBestPeer != nil {
				c.BestPeer = who
			}
			rep.Results = append(rep.Results, c)
		}
	}
	for _, r := range res {
		rep.Methods = append(rep.Methods, methodInfo{Key: r.m.key, Name: r.m.name, Note: r.m.note, Accel: r.accel,
			Skipped: r.skipped, Failed: r.failed, Verify: r.verify, PhaseErrors: r.phaseErrs})
		if len(r.tl) > 0 {
			if rep.Timeline == nil {
				rep.Timeline = map[string]map[string]float64{}
			}
			rep.Timeline[r.m.key] = medianTimeline(r.tl)
		}
	}
	return rep
}

func (rep *report) find(method, metric string) *cell {
	for i := range rep.Results {
		if rep.Results[i].Method == method && rep.Results[i].Metric == metric {
			return &rep.Results[i]
		}
	}
	return nil
}

// fmtVal prints a figure with 3 significant digits (whole numbers above 100).
func fmtVal(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v):
		return "—"
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

func fmtRatio(p *float64) string {
	if p == nil {
		return "—"
	}
	v := *p
	if v >= 10 {
		return strconv.FormatFloat(v, 'f', 0, 64) + "x"
	}
	if v >= 0.1 {
		return strconv.FormatFloat(v, 'f', 2, 64) + "x"
	}
	return strconv.FormatFloat(v, 'f', 3, 64) + "x"
}

// markdown renders the report for people.
func (rep *report) markdown(runs int) string {
	var b strings.Builder
	var measured []methodInfo
	for _, m := range rep.Methods {
		if m.Skipped == "" {
			measured = append(measured, m)
		}
	}
	fmt.Fprintf(&b, "### qmount benchmark, %s\n\n", rep.Date)
	fmt.Fprintf(&b, "Machine: %s. ", rep.Machine["description"])
	fmt.Fprintf(&b, "Medians of %d run(s)", runs)
	if rep.Quick {
		b.WriteString(" (quick: smaller sizes, one run)")
	}
	b.WriteString("; each method on its own copy of the same ext4 image.\n\n")

	b.WriteString("| metric | unit |")
	for _, m := range measured {
		fmt.Fprintf(&b, " %s |", m.Name)
	}
	b.WriteString("\n| --- | --- |")
	for range measured {
		b.WriteString(" ---: |")
	}
	b.WriteString("\n")
	mts := metricsFor(rep.Sizes)
	for _, mt := range mts {
		arrow := "↓"
		if mt.Higher {
			arrow = "↑"
		}
		fmt.Fprintf(&b, "| %s | %s %s |", mt.Label, mt.Unit, arrow)
		for _, m := range measured {
			if c := rep.find(m.Key, mt.Key); c != nil {
				fmt.Fprintf(&b, " %s |", fmtVal(c.Median))
			} else if m.PhaseErrors[mt.Key] != "" {
				b.WriteString(" FAILED |")
			} else {
				b.WriteString(" — |")
			}
		}
		b.WriteString("\n")
	}

	// Ratios of every non-kernel method: to the kernel, to the best peer.
	b.WriteString("\nRatios (figure / reference; ↑ rows: higher is better, ↓ rows: lower is better). " +
		"\"k\" = to the kernel mount, \"p\" = to the best peer (guestmount or fuse2fs, whichever is better on that row).\n\n| metric |")
	var cols []methodInfo
	for _, m := range measured {
		if m.Key != "kernel" {
			cols = append(cols, m)
			fmt.Fprintf(&b, " %s k | %s p |", m.Name, m.Name)
		}
	}
	b.WriteString("\n| --- |")
	for range cols {
		b.WriteString(" ---: | ---: |")
	}
	b.WriteString("\n")
	for _, mt := range mts {
		fmt.Fprintf(&b, "| %s |", mt.Key)
		for _, m := range cols {
			c := rep.find(m.Key, mt.Key)
			if c == nil {
				b.WriteString(" — | — |")
				continue
			}
			fmt.Fprintf(&b, " %s | %s |", fmtRatio(c.VsKernel), fmtRatio(c.VsBestPeer))
		}
		b.WriteString("\n")
	}

	if len(rep.Timeline) > 0 {
		b.WriteString("\nqmount boot timeline (guest clock, ms since the kernel started; medians over every mount, from the guest's `qmount-init: timeline` console line):\n\n")
		keys := []string{"init", "modules", "connected", "mounted", "serving", "first9p"}
		b.WriteString("| guest |")
		for _, k := range keys {
			fmt.Fprintf(&b, " %s |", k)
		}
		b.WriteString("\n| --- |")
		for range keys {
			b.WriteString(" ---: |")
		}
		b.WriteString("\n")
		names := make([]string, 0, len(rep.Timeline))
		for n := range rep.Timeline {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(&b, "| %s |", n)
			for _, k := range keys {
				if v, ok := rep.Timeline[n][k]; ok {
					fmt.Fprintf(&b, " %s |", strconv.FormatFloat(v, 'f', 0, 64))
				} else {
					b.WriteString(" — |")
				}
			}
			b.WriteString("\n")
		}
	}

	b.WriteString("\nMethods:\n\n")
	for _, m := range rep.Methods {
		fmt.Fprintf(&b, "- **%s**: ", m.Name)
		switch {
		case m.Skipped != "":
			fmt.Fprintf(&b, "not measured: %s.\n", m.Skipped)
			continue
		case m.Failed != "":
			fmt.Fprintf(&b, "FAILED: %s. ", m.Failed)
		}
		b.WriteString(m.Note)
		if m.Accel != "" {
			fmt.Fprintf(&b, "; QEMU accel %s", m.Accel)
		}
		if m.Verify != "" {
			fmt.Fprintf(&b, "; data check: %s", m.Verify)
		}
		b.WriteString(".\n")
	}
	return b.String()
}

func (rep *report) write(jsonPath, mdPath, md string) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(jsonPath, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.WriteFile(mdPath, []byte(md), 0o644)
}

// The guest prints "qmount-init: timeline init=.. modules=.. connected=..
// mounted=.. serving=.. (ms)" on its console, and later "first 9P byte at
// N ms".
var (
	timelineRE = regexp.MustCompile(`qmount-init: timeline (.*?) \(ms\)`)
	first9PRE  = regexp.MustCompile(`first 9P byte at (\d+) ms`)
)

// parseTimeline reads a guest's console log.
func parseTimeline(console []byte) (map[string]int, bool) {
	m := timelineRE.FindSubmatch(console)
	if m == nil {
		return nil, false
	}
	out := map[string]int{}
	for _, kv := range strings.Fields(string(m[1])) {
		k, v, _ := strings.Cut(kv, "=")
		if n, err := strconv.Atoi(v); err == nil {
			out[k] = n
		}
	}
	if f := first9PRE.FindSubmatch(console); f != nil {
		n, _ := strconv.Atoi(string(f[1]))
		out["first9p"] = n
	}
	return out, true
}

func medianTimeline(tls []map[string]int) map[string]float64 {
	vals := map[string][]float64{}
	for _, tl := range tls {
		for k, v := range tl {
			vals[k] = append(vals[k], float64(v))
		}
	}
	out := map[string]float64{}
	for k, v := range vals {
		out[k] = median(v)
	}
	return out
}
