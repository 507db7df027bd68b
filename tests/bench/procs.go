//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat
// (100 on every Linux architecture Go supports).
const clockTicks = 100

// procSample is what /proc says about one process at one moment.
type procSample struct {
	cpu   time.Duration // utime + stime
	hwmKB int64         // VmHWM: peak resident set size
}

// readProc samples pid. It fails once the process has exited (or is a
// zombie, whose counters /proc no longer reports).
func readProc(pid int) (procSample, error) {
	var s procSample
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// The command name (field 2) may hold spaces: fields count from the
	// closing parenthesis.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return s, fmt.Errorf("parsing /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return s, fmt.Errorf("parsing /proc/%d/stat: %d fields", pid, len(f))
	}
	if f[0] == "Z" {
		return s, fmt.Errorf("process %d is a zombie", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return s, fmt.Errorf("parsing /proc/%d/stat times", pid)
	}
	s.cpu = time.Duration(ut+st) * time.Second / clockTicks
	st2, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(st2), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB"))
			s.hwmKB, _ = strconv.ParseInt(kb, 10, 64)
		}
	}
	return s, nil
}

// alive reports whether pid still runs (a zombie does not count).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && len(b) > i+2 && b[i+2] != 'Z'
}

// waitExit waits until none of pids runs.
func waitExit(ctx context.Context, pids []int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		var left []int
		for _, p := range pids {
			if alive(p) {
				left = append(left, p)
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v still run %v after unmount", left, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// ancestors returns this process and its ancestors (`go run`, make...),
// whose command lines may name the work directory too.
func ancestors() map[int]bool {
	out := map[int]bool{}
	for pid := os.Getpid(); pid > 1 && !out[pid]; {
		out[pid] = true
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			break
		}
		i := bytes.LastIndexByte(b, ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			break
		}
		pid, _ = strconv.Atoi(f[1]) // field 4: ppid
	}
	return out
}

// procsMatching lists the processes (other than this one and its
// ancestors) whose command line contains s, e.g. an image path only this
// benchmark uses.
func procsMatching(s string) []int {
	ents, _ := os.ReadDir("/proc")
	skip := ancestors()
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || skip[pid] {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if bytes.Contains(b, []byte(s)) && alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// cmdline returns a process's argv.
func cmdline(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// killAll kills pids (processes this benchmark started) and waits a little.
func killAll(pids []int) {
	for _, p := range pids {
		syscall.Kill(p, syscall.SIGKILL)
	}
	waitExit(context.Background(), pids, 5*time.Second)
}

// tracker samples the serving processes of a method while it runs: their
// CPU time (the last value seen before each exits) and their peak RSS.
// Methods are safe for concurrent use.
type tracker struct {
	mu    sync.Mutex
	last  map[int]procSample
	vm    map[int]bool // pids whose peak RSS is reported
	stop  chan struct{}
	done  chan struct{}
	every time.Duration
}

func newTracker() *tracker {
	t := &tracker{last: map[int]procSample{}, vm: map[int]bool{}, stop: make(chan struct{}), done: make(chan struct{}), every: 50 * time.Millisecond}
	go t.loop()
	return t
}

// add starts sampling pids; rss marks them as the ones whose RSS counts.
func (t *tracker) add(rss bool, pids ...int) {
	for _, p := range pids {
		s, err := readProc(p)
		t.mu.Lock()
		if _, ok := t.last[p]; !ok || err == nil {
			t.last[p] = s
		}
		if rss {
			t.vm[p] = true
		}
		t.mu.Unlock()
	}
}

// sample reads every tracked process now.
func (t *tracker) sample() {
	t.mu.Lock()
	pids := make([]int, 0, len(t.last))
	for p := range t.last {
		pids = append(pids, p)
	}
	t.mu.Unlock()
	for _, p := range pids {
		s, err := readProc(p)
		if err != nil {
			continue // exited: keep the last sample
		}
		t.mu.Lock()
		if s.cpu >= t.last[p].cpu {
			t.last[p] = s
		}
		t.mu.Unlock()
	}
}

// exited records a child's exact CPU time from its rusage at exit.
func (t *tracker) exited(pid int, cpu time.Duration) {
	t.mu.Lock()
	if s, ok := t.last[pid]; ok && cpu > s.cpu {
		s.cpu = cpu
		t.last[pid] = s
	}
	t.mu.Unlock()
}

func (t *tracker) loop() {
	defer close(t.done)
	tick := time.NewTicker(t.every)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
			t.sample()
		}
	}
}

// totals stops sampling and returns the CPU time of all tracked processes
// and the largest peak RSS among the RSS ones, in MiB.
func (t *tracker) totals() (cpu time.Duration, rssMiB float64) {
	close(t.stop)
	<-t.done
	t.mu.Lock()
	defer t.mu.Unlock()
	var hwm int64
	for p, s := range t.last {
		cpu += s.cpu
		if t.vm[p] && s.hwmKB > hwm {
			hwm = s.hwmKB
		}
	}
	return cpu, float64(hwm) / 1024
}
