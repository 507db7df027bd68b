// Package p9server serves a directory tree over 9P2000.L. It runs inside
// the guest VM (as root, exporting the filesystem the guest mounted with
// the real Linux driver) and on Linux hosts for tests and `qmount
// loopback`. It is built on the server of github.com/hugelgupf/p9, which
// handles fids, tags, the path tree and the wire format; this package is
// the filesystem behind it and the transport under it.
//
// # Usage
//
//	srv, err := p9server.New("/mnt/root", p9server.WithReadOnly())
//	...
//	defer srv.Close()
//	err = srv.Serve(ctx, port) // one connection: socket, virtio port, vsock
//	// or: err = srv.ServeListener(ctx, listener)
//
// # Filesystem
//
// The root is opened once as an O_PATH descriptor; every file the client
// walks to is an O_PATH descriptor reached with openat2
// (RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, or openat O_NOFOLLOW where openat2
// is missing) relative to its parent, one validated component at a time.
// Names with "/" or NUL, ".", ".." and "" are refused, a walk never
// follows a symlink, and opening a symlink fails with ELOOP, so a client
// cannot leave the exported tree. Operations on an inode go through its
// descriptor (fchownat/utimensat/statx with AT_EMPTY_PATH, readlinkat,
// fstatfs), or through /proc/self/fd/N where Linux has no descriptor
// variant (reopening for I/O, truncate, chmod and xattrs of files not
// open); /proc/self/fd paths end at the inode itself even for a symlink.
// Without /proc the server falls back to *at calls on the parent.
//
// Errors are the real errno of the system call (ENOENT, EEXIST, ENOTEMPTY,
// EXDEV, ENOSPC, ELOOP, ENAMETOOLONG...), passed to the library as
// linux.Errno so it encodes them unchanged. One library limit: any error
// of a Txattrwalk (getxattr, listxattr) reaches the client as EINVAL.
//
// The server performs every operation as itself (root) and gives created
// files the uid/gid the client sends (Tucreate, Tumkdir, Tusymlink,
// Tumknod; none with the plain Tlcreate family) and exactly the
// permissions it asks for, whatever the server's umask. As on a local
// disk, a new entry of a set-group-ID directory takes the directory's
// group instead of the client's gid, and one of a directory with a
// default POSIX ACL gets the permissions the filesystem derives from the
// ACL and the requested mode.
//
// QIDs: Path is the inode number (the host client derives FUSE inode
// numbers from it; inodes of filesystems mounted below the root get
// numbers with the top bit set); Version is 0. Getattr returns every field
// statx gives: nanosecond times, blocks, birth time where the filesystem
// keeps one, the inode generation when the file is open, and DataVersion
// as a change indicator (ctime in nanoseconds).
//
// Readdir offsets are the filesystem's own getdents64 d_off cookies: they
// stay valid across calls and while entries are added, for directories of
// any size. "." and ".." are never listed: the client synthesises them.
//
// READDIRPLUS (see internal/p9ext): a Txattrwalk on a directory for the
// name p9ext.ReaddirPlusName(cookie, max) returns the entries after the
// cookie, each with its QID, full attributes and xattr names, in one
// round trip. It uses the same cookies as Readdir. READDIRTREE
// (p9ext.ReaddirTreeName) returns the listings of the directory's next
// subdirectories after a cookie, each as a READDIRPLUS batch.
//
// Locks (Tlock) are open-file-description locks on the fid's open file; a
// conflicting lock answers LockStatusBlocked and the client retries, as
// Linux's v9fs does. Tgetlock is not carried by the library (the client
// gets an error).
//
// # Transport
//
// Serve wraps the connection in a plain io.ReadWriteCloser (never a
// syscall.Conn, so the library does not call recvmsg on a virtio port)
// that reads through a 256 KiB buffer and coalesces the header, fixed part
// and payload of each reply into writes of up to 32 KiB, flushing at the
// end of every reply. It counts incoming messages by type (Stats) and caps
// the msize a client asks for at the server's (WithMessageSize, default
// DefaultMessageSize: 1 MiB of payload).
//
// # Concurrency
//
// A Server is safe for concurrent use; each connection is served with as
// many requests in flight as the client sends. The library serialises
// operations that change the tree (see p9.File); the server's own state
// per file (open descriptor, directory streams) is locked.
package p9server
