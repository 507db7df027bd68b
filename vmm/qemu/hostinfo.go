package qemu

import (
	"bufio"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// CPUInfo is what the driver reads from /proc/cpuinfo (first CPU).
type CPUInfo struct {
	Flags     map[string]bool
	ModelName string
	MHz       float64 // "cpu MHz"
}

// ParseCPUInfo parses the first processor block of /proc/cpuinfo.
func ParseCPUInfo(s string) CPUInfo {
	ci := CPUInfo{Flags: map[string]bool{}}
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			if ci.ModelName != "" || len(ci.Flags) > 0 {
				break // end of the first processor
			}
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "flags":
			for _, f := range strings.Fields(v) {
				ci.Flags[f] = true
			}
		case "model name":
			ci.ModelName = v
		case "cpu MHz":
			ci.MHz, _ = strconv.ParseFloat(v, 64)
		}
	}
	return ci
}

var ghzRE = regexp.MustCompile(`@\s*([0-9]+(?:\.[0-9]+)?)\s*GHz`)

// TSCKHz estimates the host TSC frequency from /proc/cpuinfo, or returns
// 0 when it cannot tell. The TSC must be invariant (constant_tsc); then the
// nominal frequency in an Intel model name ("@ 2.60GHz") is the TSC's, and
// under a hypervisor that reports a known TSC frequency (tsc_known_freq)
// "cpu MHz" is the TSC frequency too. A bare-metal "cpu MHz" is the
// current clock, which frequency scaling moves: not used.
func TSCKHz(ci CPUInfo) int64 {
	if !ci.Flags["constant_tsc"] {
		return 0
	}
	if m := ghzRE.FindStringSubmatch(ci.ModelName); m != nil {
		ghz, err := strconv.ParseFloat(m[1], 64)
		if err == nil && ghz > 0.1 && ghz < 10 {
			return int64(math.Round(ghz * 1e6))
		}
	}
	if ci.Flags["hypervisor"] && ci.Flags["tsc_known_freq"] && ci.MHz > 100 && ci.MHz < 10000 {
		return int64(math.Round(ci.MHz * 1000))
	}
	return 0
}
