// Package ninep is a 9P2000.L client codec written for qmount's host
// side: hugelgupf/p9's client has no xattrs, timeouts or asynchronous
// clunks. It uses p9's exported plain types (p9.QID, p9.Attr, ...) and
// encodes the wire format itself (little-endian; size[4] type[1] tag[2]).
//
// # Design
//
//   - Version: asks for 9P2000.L.Google.7 (or what WithVersion says) and
//     accepts any lower 9P2000.L version the server answers; Twalkgetattr
//     needs Google.2 (WalkGetattr falls back to Twalk + Tgetattr), the
//     Tu* creation messages that carry the owner's uid need Google.3.
//   - One writer: a mutex, each request framed into one Write call.
//   - One reader goroutine dispatching replies by tag, so many requests
//     are in flight at once (WithMaxInflight, default 1024). Rread
//     payloads are read straight into the caller's buffer.
//   - Every request takes a context; on cancellation the request is
//     flushed (Tflush) in the background and the call returns EINTR
//     (ETIMEDOUT for a deadline) at once. A fid that a flushed or
//     abandoned request may have created is clunked.
//   - Clunk does not wait: the fid number is reused once Rclunk arrives.
//     ClunkSync waits (needed where the clunk does work: xattr writes).
//   - Rlerror becomes a syscall.Errno.
//   - Nothing from the server is trusted: a reply larger than msize, of
//     the wrong type, for an unknown tag, with a count larger than asked,
//     a malformed body or an invalid name breaks the connection: every
//     pending and later call fails with EIO, and one line is logged.
//     It never panics.
//   - Stats counts requests sent by type.
//
// The connection's Close must unblock a pending Read (true of sockets and
// of *os.File in non-blocking mode).
package ninep
