// Package agent is what a qmount guest does after boot: it is the guest's
// PID 1 (cmd/qmount-init calls Init) and the agent that mounts what the
// host asks for with the real Linux driver and serves it over 9P.
//
// # Boot (Init, Linux only)
//
// Init mounts /proc, /sys, /dev (devtmpfs), /run and /tmp, logs to
// /dev/console (lines start with "qmount-init: "), reaps orphans, loads the
// boot modules named by the initramfs manifest (GuestInfo, at
// GuestInfoPath) and the qmount.modules boot parameter, and waits for the
// host's control connection: on the virtio-serial port qmount.ctl (found
// by name under /sys/class/virtio-ports; the guest writes hello first,
// which blocks until the host opens its side) or on vsock, whichever
// arrives first. It then runs an Agent and, whatever happens, a panic
// included, syncs and powers the VM off (a reboot on amd64, which makes
// QEMU -no-reboot exit; PSCI power-off on arm64).
//
// # Session (Agent.Serve, portable core)
//
// One control session: hello; for a mount request, resolve the disks by
// virtio serial (SysfsDisks), load the filesystem's modules, detect the
// type if none was given (DetectFSType), mount with mount(2) (read-only
// requests also set the block device read-only) and serve the mount with
// p9server on every connection of the 9P listener (the virtio-serial port
// qmount.9p through PortListener, and/or vsock); then "mounted" with the
// timeline, or "error" with the step and, for mount failures, the
// kernel's own log lines (read from /dev/kmsg). Shutdown, loss of the
// control connection and cancellation all end the same way: stop serving,
// sync, unmount (retrying, detaching as a last resort), "bye" if the host
// still listens.
//
// The agent's log records go to its logger and, during a session, to the
// host as "log" messages. Nothing secret is logged: messages are logged
// by type, mount requests by their non-secret fields.
package agent
