// Package client is the host side of qmount's data path: it speaks
// 9P2000.L (package client/ninep) to the server in the guest and presents
// the tree through go-fuse at a mount point.
//
// # Usage
//
//	m, err := client.Mount(ctx, conn, "/mnt/x", client.WithLogger(log))
//	...
//	err = m.Wait() // until umount /mnt/x, or m.Unmount()
//
// NewRoot gives the root node alone, for callers that mount it
// themselves (fs.Mount, fs.NewNodeFS).
//
// # Round trips
//
// Inside a VM every 9P request costs about half a millisecond, so the
// client is built to send few:
//
//   - Lookup is one Twalkgetattr. A directory keeps the fid of that walk
//     (it is walked from again); other files clunk it at once (clunks
//     never wait for their reply).
//   - A node's fid is obtained lazily, by walking from its parent only
//     when an operation needs one, so entries learnt from READDIRPLUS
//     cost nothing until used. Fids are clunked when the kernel forgets
//     the node (and open files' fids on Release), so the server's open
//     files return to their baseline.
//   - Directory listing uses READDIRPLUS (internal/p9ext): one Txattrwalk,
//     Tread and Tclunk return up to 1 MiB of entries with attributes and
//     xattr names; go-fuse's per-entry lookup is answered from that batch.
//     After a first batch of 32 KiB, batches carry only names and types
//     unless the kernel asks for attributes (find reads no inode on the
//     server). Each directory keeps its listing for listingTTL, updated
//     by every change made through the mount, and answers lookups (and
//     absent names: the lookup before a create) from it; after a few
//     lookups it could not answer it reads the whole listing with
//     attributes (prefetch). `ls -l` of 10,000 files costs about twenty
//     requests. Servers without READDIRPLUS get Treaddir + a
//     Twalkgetattr per entry.
//   - Subdirectories are read ahead (READDIRTREE, p9ext): when a listing
//     read from the server has subdirectories, their listings are
//     fetched in the background, 16 per request (4 requests in flight,
//     at most 128 subdirectories per listing read, none whose size says
//     it is large), and kept by inode number until the subdirectory asks
//     for its listing; a lookup or readdir of a subdirectory being read
//     waits for it rather than asking. Read ahead for a readdir (find),
//     listings carry names and types only (the server reads no inode;
//     their entries reach the kernel's READDIRPLUS without a node);
//     the first lookup that needs attributes there reads that listing
//     with them and re-reads its siblings' (find -ls, du). Read ahead
//     for lookups (a listing prefetched), they carry attributes. `find`
//     over 100 directories of 100 files costs 27 requests instead of
//     405, with a stat of every entry 51, and stat by path of every
//     file 34 instead of 1,004. Servers without it answer an error and
//     are not asked again.
//   - Create is Twalk + Tlcreate + the file's and the parent's Tgetattr
//     in parallel; a new file's xattrs are known empty when its parent
//     has no default ACL; a written file's attributes are read back in
//     the background when it is released. An open file lends its fid to
//     its node's other operations (setattr by name while open).
//   - Reads and writes carry up to 1 MiB each (msize 1 MiB + header,
//     FUSE max_write 1 MiB), one fid per open file.
//   - Direct reads (WithDirectRead): where the server gives a file's
//     extent map (p9ext EXTENTS, fetched while the file is opened), its
//     data is read from the device on the host, not through the server;
//     never while the file is open for writing or being truncated
//     through the mount (see direct.go).
//
// # Caching
//
// The guest's file system is changed only through this mount, so the
// kernel may cache aggressively, and every change made through the mount
// updates or invalidates what it affects:
//
//   - attributes: WithAttrTimeout, default DefaultAttrTimeout (1 h). The
//     client also keeps each node's attributes and answers Getattr from
//     them until an operation invalidates them (write, setattr, link,
//     unlink, rename, xattr change).
//   - names: WithEntryTimeout, default DefaultEntryTimeout (1 h); failed
//     lookups WithNegativeTimeout, default DefaultNegativeTimeout (1 h).
//     The client's own directory listings answer lookups for 10 s after
//     they were read from the server (kept current by the mount's own
//     changes meanwhile). Listings read ahead are kept for as long (at
//     most 65,536 entries not yet taken by a directory), dropped by any
//     change of their directory made through the mount, and answer
//     readdir too while their directory is unchanged.
//   - file contents: FOPEN_KEEP_CACHE when a file's mtime and size are
//     those seen at its previous open; writes go through the kernel's page
//     cache (no writeback cache: mtime and size stay exact), and shared
//     writable mmap works (no direct I/O).
//   - directory listings: FOPEN_CACHE_DIR, WithDirCache (default on).
//   - xattr names (from READDIRPLUS or listxattr), so getxattr of a name
//     that is not set is answered ENODATA without a request; the p9
//     library's server turns every getxattr error into EINVAL, so the
//     client could not tell "no such attribute" otherwise.
//   - symlink targets (they never change).
//
// # Safety
//
// The client never trusts the server: replies are bounded by msize,
// counts by what was asked, names validated (p9ext.ValidName); a protocol
// violation breaks the connection with one log line and every operation
// then fails with EIO. Each request is bounded by WithRequestTimeout
// (default DefaultRequestTimeout) and flushed when it expires. A flushed
// request's cleanup (clunking a fid it made) waits for its own reply,
// since the p9 server may answer the Tflush first and still run it.
// FUSE interrupts do not cancel requests (a signal must not turn a stat
// into EINTR); a blocking lock wait does end on one.
//
// # Fids
//
// A node's fid is reference-counted: operations hold it while their
// requests may carry it, and a FORGET, unlink or rename only drops the
// node's reference, so the fid is clunked after its last use and its
// number is reused only after the Rclunk.
//
// # Limits
//
// 9P2000.L has no RENAME_EXCHANGE (EINVAL). The p9 library's server
// refuses setattr (ftruncate, fchmod, futimens) on a file whose last name
// was removed while open (EINVAL); reads and writes of it work. POSIX
// locks are kept by the host kernel unless WithServerLocks is given.
// Set-ID bits are set through p9server's "qmount.chmod" xattr, because
// the p9 library masks them out of Tsetattr.
package client
