//go:build linux

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"
)

type options struct {
	quick    bool
	qmount   string
	dir      string
	out      string
	only     string
	runs     int
	guestTCG string
	keep     bool
	between  int
}

func main() {
	var o options
	flag.BoolVar(&o.quick, "quick", false, "one run with smaller sizes (a few minutes)")
	flag.StringVar(&o.qmount, "qmount", "build/qmount", "the qmount binary (its guests are found next to it)")
	flag.StringVar(&o.dir, "dir", "", "work directory for the images (default: a new one under $TMPDIR)")
	flag.StringVar(&o.out, "out", "build/bench", "where results.md and results.json go")
	flag.StringVar(&o.only, "methods", "", "comma-separated subset of methods: kernel,qmount,qmount-via-guest,qmount-mini,loopback,guestmount,fuse2fs")
	flag.IntVar(&o.runs, "runs", 0, "runs per method (default 3, quick 1)")
	flag.StringVar(&o.guestTCG, "guestfs-tcg", "auto", "force libguestfs onto TCG: auto (when qmount would use TCG), yes, no")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory")
	flag.IntVar(&o.between, "drop-between", 1, "drop_caches value between the phases of a mount (3 is always used right after mounting)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

// runRecord is what one run wrote to the image, checked at the end.
type runRecord struct {
	n        int
	dir      string // under writesDir
	fioBytes int64
}

func run(ctx context.Context, o options, stdout, progress io.Writer) error {
	if os.Geteuid() != 0 {
		return errors.New("run as root: it mounts loop devices and drops the page cache")
	}
	sz := fullSizes
	if o.quick {
		sz = quickSizes
	}
	if o.runs > 0 {
		sz.Runs = o.runs
	}
	for _, t := range []string{"mkfs.ext4", "e2fsck", "fio", "tar", "find", "sync", "mount", "losetup"} {
		if msg := needTools(t); msg != "" {
			return errors.New(msg)
		}
	}
	qm, err := filepath.Abs(o.qmount)
	if err != nil {
		return err
	}
	work := o.dir
	if work == "" {
		if work, err = os.MkdirTemp("", "qmount-benchall-"); err != nil {
			return err
		}
		if !o.keep {
			defer os.RemoveAll(work)
		}
	} else if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	if work, err = filepath.Abs(work); err != nil {
		return err
	}
	// Whatever happens, no process started on our images outlives us.
	defer func() {
		// The trailing separator keeps other runs' directories (same
		// prefix) out of the match.
		if pids := procsMatching(work + string(filepath.Separator)); len(pids) > 0 {
			fmt.Fprintf(progress, "bench: killing leftover processes %v\n", pids)
			killAll(pids)
		}
	}()

	e := &env{qmount: qm, stateDir: filepath.Join(work, "state")}
	switch o.guestTCG {
	case "yes":
		e.guestTCG = true
	case "no":
	case "auto":
		e.guestTCG = qemuUsesTCG()
	default:
		return fmt.Errorf("-guestfs-tcg=%q: want auto, yes or no", o.guestTCG)
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	dumpDir = o.out
	all := methods(e)
	if o.only != "" {
		want := map[string]bool{}
		for _, k := range strings.Split(o.only, ",") {
			want[strings.TrimSpace(k)] = true
		}
		var sel []*method
		for _, m := range all {
			if want[m.key] {
				sel = append(sel, m)
				delete(want, m.key)
			}
		}
		if len(want) > 0 {
			return fmt.Errorf("-methods: unknown %v", keys(want))
		}
		all = sel
	}

	start := time.Now()
	load0 := loadAvg()
	fmt.Fprintf(progress, "bench: building the image (%d GiB sparse ext4) and the source tarball in %s\n", sz.ImageGiB, work)
	ds, err := buildDataset(ctx, work, sz)
	if err != nil {
		return fmt.Errorf("building the dataset: %w", err)
	}
	ds.quick = o.quick
	if o.between != 1 && o.between != 3 {
		return fmt.Errorf("-drop-between=%d: want 1 or 3", o.between)
	}
	ds.dropBetween = o.between
	fmt.Fprintf(progress, "bench: dataset ready in %.1f s\n", time.Since(start).Seconds())

	var results []*methodResult
	var failed []string
	for _, m := range all {
		if m.skip != "" {
			fmt.Fprintf(progress, "bench: %s: skipped: %s\n", m.name, m.skip)
			results = append(results, &methodResult{m: m, skipped: m.skip})
			continue
		}
		t := time.Now()
		r := benchMethod(ctx, e, m, ds, work, progress)
		results = append(results, r)
		if r.failed != "" {
			failed = append(failed, m.key)
		}
		fmt.Fprintf(progress, "bench: %s done in %.0f s\n", m.name, time.Since(t).Seconds())
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}

	rep := buildReport(results, sz, o.quick, time.Now().UTC().Format("2006-01-02 15:04 UTC"), machine(results, load0))
	md := rep.markdown(sz.Runs)
	fmt.Fprint(stdout, md)
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	if err := rep.write(filepath.Join(o.out, "results.json"), filepath.Join(o.out, "results.md"), md); err != nil {
		return fmt.Errorf("writing the results: %w", err)
	}
	fmt.Fprintf(progress, "bench: wrote %s/results.md and results.json (%.0f s in all)\n", o.out, time.Since(start).Seconds())
	if len(failed) > 0 {
		return fmt.Errorf("methods failed: %s", strings.Join(failed, ", "))
	}
	return nil
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// qemuUsesTCG mirrors qmount's accelerator choice on Linux closely enough
// to give libguestfs the same one: no usable /dev/kvm, or nested PVM KVM
// (where stock kernels hang), means TCG.
func qemuUsesTCG() bool {
	if exists("/sys/module/kvm_pvm") {
		return true
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return true
	}
	f.Close()
	return false
}

// benchMethod measures one method on its own copy of the image.
func benchMethod(ctx context.Context, e *env, m *method, ds *dataset, work string, progress io.Writer) *methodResult {
	res := &methodResult{m: m, runs: map[string][]float64{}, phaseErrs: map[string]string{}}
	add := func(key string, v float64) { res.runs[key] = append(res.runs[key], v) }
	say := func(format string, a ...any) {
		fmt.Fprintf(progress, "  %-12s "+format+"\n", append([]any{m.key}, a...)...)
	}

	img := filepath.Join(work, m.key+".img")
	mnt := filepath.Join(work, "mnt-"+m.key)
	var cur *mounted
	defer func() {
		switch {
		case cur != nil && cur.unmountTried:
			cur.force()
		case cur != nil:
			c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			if err := cur.unmount(c); err != nil {
				say("cleanup: %v; forcing", err)
				cur.force()
			}
			cancel()
		}
		forceKernel(img, mnt)
		if pids := procsMatching(img); len(pids) > 0 {
			say("cleanup: killing %v", pids)
			killAll(pids)
		}
		os.Remove(img)
	}()
	fail := func(step string, err error) *methodResult {
		res.failed = fmt.Sprintf("%s: %v", step, err)
		say("FAILED: %s", res.failed)
		return res
	}
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return fail("mkdir", err)
	}
	if out, err := exec.CommandContext(ctx, "cp", "--sparse=always", ds.pristine, img).CombinedOutput(); err != nil {
		return fail("copying the image", fmt.Errorf("%w: %s", err, out))
	}

	mount := func(record bool) error {
		t0 := time.Now()
		mm, err := m.mount(ctx, e, img, mnt)
		if err != nil {
			return err
		}
		cur = mm
		if err := waitReady(ctx, mnt, 3*time.Minute); err != nil {
			return err
		}
		if d := time.Since(t0).Seconds(); record {
			add("mount", d)
			say("mount %.2f s", d)
		}
		if mm.accel != "" {
			res.accel = mm.accel
		}
		return nil
	}
	unmount := func(record bool) error {
		t0 := time.Now()
		cur.unmountTried = true
		if err := cur.unmount(ctx); err != nil {
			return err
		}
		d := time.Since(t0).Seconds()
		console := cur.console
		cur = nil
		if record {
			add("unmount", d)
			say("unmount %.2f s", d)
		}
		if console != "" {
			b, _ := os.ReadFile(console)
			if tl, ok := parseTimeline(b); ok {
				res.tl = append(res.tl, tl)
				if record {
					say("guest timeline (ms): %v", tl)
				}
			} else if record {
				say("no `qmount-init: timeline` line in %s", console)
			}
		}
		return nil
	}

	// A first mount that is not measured, so every method starts with its
	// binaries in the page cache and its one-time setup done (libguestfs
	// builds its appliance on first use). Quick runs skip it unless such
	// a setup is pending.
	if !ds.quick || m.setupPending() {
		say("warm-up mount (not measured)")
		e.tr = newTracker()
		err := mount(false)
		if err == nil {
			err = unmount(false)
		}
		e.tr.totals()
		if err != nil {
			return fail("warm-up", err)
		}
	}

	var records []runRecord
	for r := 0; r < ds.sz.Runs; r++ {
		say("run %d/%d", r+1, ds.sz.Runs)
		e.tr = newTracker()
		rec, err := oneRun(ctx, ds, r, mnt, mount, unmount, res, say)
		cpu, rss := e.tr.totals()
		if err != nil {
			return fail(fmt.Sprintf("run %d", r+1), err)
		}
		records = append(records, rec)
		if m.kind != kindKernel {
			add("cpu", cpu.Seconds())
			add("rss", rss)
			say("serving processes: %.1f s CPU, peak RSS %.0f MiB", cpu.Seconds(), rss)
		}
	}

	vmnt := mnt + ".verify"
	if err := os.MkdirAll(vmnt, 0o755); err != nil {
		return fail("verify", err)
	}
	if err := verifyImage(ctx, ds, img, vmnt, records); err != nil {
		res.verify = "FAILED: " + err.Error()
		return fail("verify", err)
	}
	if len(res.phaseErrs) > 0 {
		var ks []string
		for k, v := range res.phaseErrs {
			ks = append(ks, k+": "+v)
		}
		sort.Strings(ks)
		return fail("phases", errors.New(strings.Join(ks, "; ")))
	}
	res.verify = "e2fsck -fn clean; every byte written re-read right by the kernel's mount"
	say("verified: %s", res.verify)
	return res
}

type sayFunc func(format string, a ...any)

// oneRun is one measured run on a fresh mount: cold reads (each of data
// the mount has not touched yet, after dropping the host's caches), then
// the metadata and write workloads, then the unmount.
//
// A failing phase is recorded and the run goes on with the next one; a
// failing mount or unmount ends the run.
func oneRun(ctx context.Context, ds *dataset, r int, mnt string, mount, unmount func(bool) error,
	res *methodResult, say sayFunc) (runRecord, error) {
	rec := runRecord{n: r, dir: fmt.Sprintf("r%d", r)}
	if err := mount(true); err != nil {
		return rec, fmt.Errorf("mount: %w", err)
	}
	dir := filepath.Join(mnt, writesDir, rec.dir)
	steps := []struct {
		key, unit string
		f         func() (float64, error)
	}{
		{"read_files", "MB/s", func() (float64, error) { return readFiles(mnt, ds) }},
		{"read_big", "MB/s", func() (float64, error) { return readOne(mnt, bigFile, ds) }},
		{"fio_read", "MB/s", func() (float64, error) {
			res, err := fio(ctx, fioJob{name: "seq", file: filepath.Join(mnt, seqFile), rw: "read", bs: "1M",
				size: ds.sz.SeqMiB << 20, verify: true, readonly: true})
			return res.MBps, err
		}},
		{"fio_randread", "IOPS", func() (float64, error) {
			res, err := fio(ctx, fioJob{name: "rand", file: filepath.Join(mnt, randFile), rw: "randread", bs: "4k",
				size: ds.sz.RandMiB << 20, runtime: ds.sz.RandSec, readonly: true})
			return res.IOPS, err
		}},
		{"find", "entries/s", func() (float64, error) { return findRate(ctx, mnt, ds.sz.TreeEntries) }},
		{"stat", "entries/s", func() (float64, error) { return statRate(mnt, ds) }},
		{"fio_write", "MB/s", func() (float64, error) {
			if err := os.Mkdir(dir, 0o755); err != nil {
				return 0, err
			}
			res, err := fio(ctx, fioJob{name: "seq", file: filepath.Join(dir, "fio"), rw: "write", bs: "1M",
				size: ds.sz.FioWriteMiB << 20, runtime: ds.sz.FioWriteSec, verify: true})
			rec.fioBytes = res.Bytes
			return res.MBps, err
		}},
		{"create", "files/s", func() (float64, error) { return createRate(dir, r, ds.sz.Creates) }},
		{"tar", "files/s", func() (float64, error) { return untarRate(ctx, dir, ds) }},
	}
	for i, s := range steps {
		// Right after mounting, everything goes (page cache, dentries,
		// inodes: the previous run's reads); between phases, which touch
		// disjoint data, the page cache (and -drop-between=3 all of it).
		what := ds.dropBetween
		if i == 0 {
			what = 3
		}
		if err := dropCaches(what); err != nil {
			return rec, err
		}
		v, err := s.f()
		if err != nil {
			if ctx.Err() != nil {
				return rec, ctx.Err()
			}
			say("%-12s FAILED: %v", s.key, err)
			if res.phaseErrs[s.key] == "" {
				res.phaseErrs[s.key] = err.Error()
			}
			continue
		}
		res.runs[s.key] = append(res.runs[s.key], v)
		say("%-12s %10.1f %s", s.key, v, s.unit)
	}
	if err := unmount(true); err != nil {
		return rec, fmt.Errorf("unmount: %w", err)
	}
	return rec, nil
}

// machine describes the host for the report.
func machine(res []*methodResult, load0 string) map[string]string {
	m := map[string]string{"arch": runtime.GOARCH, "cores": fmt.Sprint(runtime.NumCPU()),
		"load_start": load0, "load_end": loadAvg()}
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
				m["os"] = strings.Trim(v, `"`)
			}
		}
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(string(b), "MemTotal: %d kB", &kb)
		m["memory"] = fmt.Sprintf("%.0f GiB", float64(kb)/(1<<20))
	}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		m["kernel"] = utsString(u.Release[:])
	}
	if out, err := exec.Command("qemu-system-x86_64", "--version").Output(); err == nil {
		m["qemu"] = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	accel := map[string]bool{}
	for _, r := range res {
		if r.accel != "" {
			accel[r.accel] = true
		}
	}
	m["accel"] = strings.ToUpper(strings.Join(keys(accel), "/"))
	arch := map[string]string{"amd64": "x86_64", "arm64": "aarch64"}[runtime.GOARCH]
	if arch == "" {
		arch = runtime.GOARCH
	}
	d := fmt.Sprintf("%s, %s, %s cores (%s), %s RAM, host kernel %s, %s", m["os"], arch, m["cores"], m["cpu"], m["memory"], m["kernel"], m["qemu"])
	if m["accel"] != "" {
		d += ", accel " + m["accel"]
	}
	m["description"] = d + fmt.Sprintf("; 1-minute load average %s at the start, %s at the end", m["load_start"], m["load_end"])
	return m
}

// loadAvg is the 1-minute load average: other work on the machine skews
// every figure, so the report says how busy it was.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

func utsString(b []int8) string {
	var s []byte
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}
