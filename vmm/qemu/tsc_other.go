//go:build !amd64

package qemu

import "time"

// measureTSCKHz is 0 off x86: there is no TSC to measure.
func measureTSCKHz(time.Duration) int64 { return 0 }
