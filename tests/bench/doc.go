//go:build linux

// Command bench measures qmount against the kernel's own mount of the
// same image and against its peers, in one run:
//
//	go run ./tests/bench [-quick]    (as root; `make bench [QUICK=1]`)
//
// It builds one ext4 image (mkfs.ext4 -d: 1 MiB files, a 256 MiB file, a
// fio-written file, a file for random reads, two 10,000-entry trees) and a
// synthetic source tarball, then gives each method its own copy of the
// image and runs the same workloads on it: mount latency, cold reads
// (files, one big file, fio sequential and 4 KiB random), find, stat,
// fio sequential write with end_fsync, small-file creates + syncfs,
// tar -x + sync -f, unmount latency, and the serving processes' CPU time
// and peak RSS from /proc. Methods: the kernel loop mount, qmount (default
// guest, and the mini guest when built), `qmount loopback` over the
// kernel mount (the data path alone), guestmount (libguestfs) and fuse2fs.
//
// "Cold" is the same for every method: each run is a fresh mount (a new
// VM for qmount and guestmount), the host's caches are dropped before
// every phase, and no phase reads data the mount has read before.
//
// Every byte read is checked (CRC-32C of the files, fio's verify headers)
// and, after its runs, each method's image must pass e2fsck -fn and hold,
// as the kernel's own mount reads it, exactly what the runs wrote: a fast
// wrong answer fails the method instead of winning.
//
// Results: a Markdown table on stdout and in build/bench/results.md, and
// build/bench/results.json (one object per method and metric with its
// median, unit and runs, and its ratios to the kernel and the best peer).
package main
