//go:build linux

package main

import (
	"fmt"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/qmount/qmount/client"
)

// mountFloor mounts go-fuse's own passthrough file system (fs.LoopbackRoot:
// each FUSE request becomes the same system call on src, no 9P, no
// second process) at mnt, with qmount's FUSE settings: what any FUSE
// file system can reach on this kernel, the floor under qmount's ratios.
func mountFloor(src, mnt string) (*fuse.Server, error) {
	root, err := fs.NewLoopbackRoot(src)
	if err != nil {
		return nil, fmt.Errorf("go-fuse loopback of %s: %w", src, err)
	}
	timeout := time.Hour
	srv, err := fs.Mount(mnt, root, &fs.Options{
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		MountOptions: fuse.MountOptions{
			FsName:            "gofuse-loopback",
			MaxWrite:          client.DefaultMaxWrite,
			MaxReadAhead:      client.DefaultMaxReadAhead,
			DisableSplice:     true,
			DirectMount:       true,
			ExtraCapabilities: fuse.CAP_READDIRPLUS_AUTO,
			Options:           []string{"default_permissions"},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("mounting the go-fuse loopback at %s: %w", mnt, err)
	}
	return srv, nil
}
