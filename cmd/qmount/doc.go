// Command qmount mounts any filesystem Linux can read, through a tiny VM.
//
// Each command lives in its own file and registers itself in init:
// mount.go (the default command, and the hidden __supervise command the
// mount re-executes itself as), unmount.go, status.go, log.go, stop.go and
// loopback.go. The mount machinery (checks, state, locks, control socket,
// the supervisor's life) is package supervisor; this package parses flags,
// shows progress and wires the FUSE client (fuse.go) and the hypervisor
// driver (drivers_*.go) into it.
//
// `qmount DISK [MOUNTPOINT]` means `qmount mount DISK [MOUNTPOINT]`, and
// mount's flags may follow its arguments (see withDefaultCommand).
//
// The mount command starts the supervisor with two inherited pipes: fd 3
// carries JSON-line events back (progress steps, the log path, ready with
// the mount point, or the error that ended the attempt, sent only after
// everything was cleaned up), fd 4 the mount plan (so nothing about the
// mount appears on a command line).
package main
