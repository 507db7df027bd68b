// Package supervisor runs one qmount mount: it checks and resolves what
// the user asked for (Prepare), then owns the guest VM (through
// session.Session) and the FUSE mount for as long as the mount lives (Run),
// keeping the mount's state, log and control socket in a per-user state
// directory so that `qmount status`, `log`, `unmount` and `stop` can find
// and talk to it.
//
// # State directory
//
// StateDir is $QMOUNT_STATE_DIR when set, else $XDG_STATE_HOME/qmount or
// ~/.local/state/qmount on Linux and ~/Library/Application Support/qmount
// on macOS. It holds:
//
//	mounts/<id>/state.json   the mount's State (rewritten atomically)
//	mounts/<id>/ctl.sock     the supervisor's control socket
//	mounts/<id>/vm/          the hypervisor driver's runtime files
//	logs/<id>.log            the supervisor's log (kept after the mount ends)
//	logs/<id>.console        the guest console (kept after the mount ends)
//	locks/<key>.lock         disk locks (flock), keyed by device and inode
//
// A mount's directory exists exactly while its supervisor runs (or until
// `qmount stop` cleans up after a supervisor that died). Logs of the last
// KeepLogs mounts are kept for `qmount log`.
//
// # Locks
//
// A disk (with its partition number) is locked while mounted: an exclusive
// flock for read-write mounts, a shared one for read-only mounts, so a
// second read-write mount of the same disk is refused while any number of
// read-only mounts may share it. The lock lives in the supervisor process
// and ends with it, even on kill -9.
//
// # Control socket
//
// The supervisor answers JSON-line requests on mounts/<id>/ctl.sock:
// {"op":"status"} returns the State, {"op":"unmount"} runs the clean
// shutdown and answers once it is done (or refused, when the mount point is
// busy), just before the supervisor exits.
//
// # Clean shutdown
//
// On SIGTERM or SIGINT (Run's ctx), an unmount request, the FUSE mount
// going away (umount, fusermount3 -u) or the VM stopping, the supervisor
// unmounts FUSE if still mounted, asks the guest to sync, unmount and power
// off (session.Shutdown), removes its state and control socket and the
// mount point if it created it, and releases the disk lock.
package supervisor
