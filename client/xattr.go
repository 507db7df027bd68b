package client

import (
	"context"
	"errors"
	"slices"
	"syscall"
)

// maxXattrSize is Linux's XATTR_SIZE_MAX.
const maxXattrSize = 64 << 10

// xattrNames returns the node's xattr names, from the cache (filled by
// READDIRPLUS or an earlier list) or with one list request.
func (n *node) xattrNames(ctx context.Context) ([]string, error) {
	n.mu.Lock()
	if n.xattrsOK {
		names := n.xattrs
		n.mu.Unlock()
		return names, nil
	}
	n.mu.Unlock()
	fidRef, err := n.holdFid(ctx)
	if err != nil {
		return nil, err
	}
	defer fidRef.put()
	fid := fidRef.fid
	names, err := n.fsys.c.ListXattrs(ctx, fid)
	if err != nil {
		if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOSYS) || errors.Is(err, syscall.EOPNOTSUPP) {
			// The p9 library maps every xattr error to EINVAL: a file
			// system without xattrs (vfat, exfat) lists none, and
			// getxattr is answered ENODATA without a request.
			names = []string{}
			n.setXattrNames(names)
			return names, nil
		}
		return nil, err
	}
	n.setXattrNames(names)
	return names, nil
}

// Getxattr answers ENODATA from the cached names when it can: the p9
// library's server turns every getxattr error into EINVAL.
func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	ctx, cancel := n.fsys.reqCtx(ctx)
	defer cancel()
	names, err := n.xattrNames(ctx)
	if err != nil {
		return 0, errno(err)
	}
	if !slices.Contains(names, attr) {
		return 0, syscall.ENODATA
	}
	fidRef, err := n.holdFid(ctx)
	if err != nil {
		return 0, errno(err)
	}
	defer fidRef.put()
	fid := fidRef.fid
	v, err := n.fsys.c.GetXattr(ctx, fid, attr, maxXattrSize)
	if err != nil {
		if errors.Is(err, syscall.EINVAL) {
			return 0, syscall.ENODATA
		}
		return 0, errno(err)
	}
	if len(dest) == 0 {
		return uint32(len(v)), 0
	}
	if len(v) > len(dest) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	ctx, cancel := n.fsys.reqCtx(ctx)
	defer cancel()
	names, err := n.xattrNames(ctx)
	if err != nil {
		if errors.Is(err, syscall.EOPNOTSUPP) {
			return 0, 0 // no xattrs
		}
		return 0, errno(err)
	}
	size := 0
	for _, s := range names {
		size += len(s) + 1
	}
	if len(dest) == 0 {
		return uint32(size), 0
	}
	if size > len(dest) {
		return uint32(size), syscall.ERANGE
	}
	b := dest[:0]
	for _, s := range names {
		b = append(b, s...)
		b = append(b, 0)
	}
	return uint32(size), 0
}

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	defer n.fsys.mutation()()
	if n.fsys.cfg.readOnly {
		return syscall.EROFS
	}
	if len(attr) == 0 || len(attr) > 255 {
		return syscall.ERANGE
	}
	if len(data) > maxXattrSize {
		return syscall.E2BIG
	}
	ctx, cancel := n.fsys.reqCtx(ctx)
	defer cancel()
	// XATTR_CREATE / XATTR_REPLACE checked against the cached names first.
	n.mu.Lock()
	known, has := n.xattrsOK, slices.Contains(n.xattrs, attr)
	n.mu.Unlock()
	if known {
		if flags&1 != 0 && has {
			return syscall.EEXIST
		}
		if flags&2 != 0 && !has {
			return syscall.ENODATA
		}
	}
	fidRef, err := n.holdFid(ctx)
	if err != nil {
		return errno(err)
	}
	defer fidRef.put()
	fid := fidRef.fid
	n.invalidate() // ctime
	if err := n.fsys.c.SetXattr(ctx, fid, attr, data, flags); err != nil {
		n.dropXattrNames()
		return errno(err)
	}
	n.mu.Lock()
	if n.xattrsOK && !slices.Contains(n.xattrs, attr) {
		n.xattrs = append(slices.Clip(n.xattrs), attr)
	}
	n.mu.Unlock()
	return 0
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	defer n.fsys.mutation()()
	if n.fsys.cfg.readOnly {
		return syscall.EROFS
	}
	if n.xattrKnownAbsent(attr) {
		return syscall.ENODATA
	}
	ctx, cancel := n.fsys.reqCtx(ctx)
	defer cancel()
	fidRef, err := n.holdFid(ctx)
	if err != nil {
		return errno(err)
	}
	defer fidRef.put()
	fid := fidRef.fid
	n.invalidate()
	err = n.fsys.c.RemoveXattr(ctx, fid, attr)
	n.dropXattrNames()
	if errors.Is(err, syscall.EINVAL) {
		return syscall.ENODATA
	}
	return errno(err)
}

func (n *node) dropXattrNames() {
	n.mu.Lock()
	n.xattrs, n.xattrsOK = nil, false
	n.mu.Unlock()
}
