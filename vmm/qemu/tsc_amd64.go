package qemu

import "time"

func rdtsc() uint64

// measureTSCKHz times the TSC against the monotonic clock for d. QEMU's
// TCG guests read the host TSC, so this is the frequency they need in
// tsc_early_khz when the host does not publish it.
func measureTSCKHz(d time.Duration) int64 {
	t0, c0 := time.Now(), rdtsc()
	for time.Since(t0) < d {
	}
	c1, el := rdtsc(), time.Since(t0)
	if el <= 0 || c1 <= c0 {
		return 0
	}
	khz := float64(c1-c0) / (float64(el.Nanoseconds()) / 1e6)
	// Round to 100 kHz: the measurement is good to about 0.1%.
	return int64(khz/100+0.5) * 100
}
