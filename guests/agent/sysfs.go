package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// readAttr reads a sysfs attribute, trimmed of whitespace and NULs.
func readAttr(p string) (string, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	return strings.Trim(string(b), " \t\r\n\x00"), nil
}

// FindPorts maps virtio-serial port names to their device nodes, from
// sysRoot/class/virtio-ports/<vportNpM>/name -> devRoot/<vportNpM>. Ports
// without a name are left out. A missing class directory yields no ports.
func FindPorts(sysRoot, devRoot string) (map[string]string, error) {
	dir := filepath.Join(sysRoot, "class", "virtio-ports")
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing virtio ports: %w", err)
	}
	out := map[string]string{}
	for _, e := range ents {
		name, err := readAttr(filepath.Join(dir, e.Name(), "name"))
		if err != nil || name == "" {
			continue
		}
		out[name] = filepath.Join(devRoot, e.Name())
	}
	return out, nil
}

// FindDiskBySerial returns the name of the block device (e.g. "vda") whose
// sysRoot/block/<dev>/serial equals serial, and false if none does yet.
func FindDiskBySerial(sysRoot, serial string) (string, bool, error) {
	dir := filepath.Join(sysRoot, "block")
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("listing block devices: %w", err)
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	for _, n := range names {
		s, err := readAttr(filepath.Join(dir, n, "serial"))
		if err == nil && s == serial {
			return n, true, nil
		}
	}
	return "", false, nil
}

// FindPartition returns the name of partition n (1-based) of disk: the
// entry of sysRoot/block/<disk>/ whose "partition" attribute is n
// ("vda1", "nvme0n1p1"), and false if it does not exist yet.
func FindPartition(sysRoot, disk string, n int) (string, bool, error) {
	dir := filepath.Join(sysRoot, "block", disk)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", false, fmt.Errorf("listing partitions of %s: %w", disk, err)
	}
	want := strconv.Itoa(n)
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), disk) {
			continue
		}
		if p, err := readAttr(filepath.Join(dir, e.Name(), "partition")); err == nil && p == want {
			return e.Name(), true, nil
		}
	}
	return "", false, nil
}

// poll calls check every interval until it reports done, fails, or
// timeout passes (then it returns a timeout error naming what).
func poll(ctx context.Context, timeout, interval time.Duration, what string, check func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-t.C:
		}
		done, err := check()
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting for %s: not there after %v", what, timeout)
		}
		t.Reset(interval)
	}
}

// SysfsDisks finds disks by virtio serial in sysfs and returns their nodes
// in devtmpfs, waiting up to Timeout for each to appear.
type SysfsDisks struct {
	SysRoot string        // "/sys"
	DevRoot string        // "/dev"
	Timeout time.Duration // how long to wait for a disk; 0 means 5s
}

var _ DiskFinder = SysfsDisks{}

// Find implements DiskFinder.
func (d SysfsDisks) Find(ctx context.Context, serial string, partition int) (string, error) {
	timeout := d.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	const every = 5 * time.Millisecond
	var disk string
	err := poll(ctx, timeout, every, "disk "+serial, func() (bool, error) {
		n, ok, err := FindDiskBySerial(d.SysRoot, serial)
		disk = n
		return ok, err
	})
	if err != nil {
		return "", err
	}
	name := disk
	if partition > 0 {
		err := poll(ctx, timeout, every, fmt.Sprintf("partition %d of %s", partition, disk), func() (bool, error) {
			n, ok, err := FindPartition(d.SysRoot, disk, partition)
			name = n
			return ok, err
		})
		if err != nil {
			return "", err
		}
	}
	dev := filepath.Join(d.DevRoot, name)
	err = poll(ctx, timeout, every, dev, func() (bool, error) {
		_, err := os.Stat(dev)
		return err == nil, nil
	})
	if err != nil {
		return "", err
	}
	return dev, nil
}

// Region implements RegionFinder: where the block device dev (a node
// Find returned, "/dev/vda1") lies on its disk, in bytes, from sysfs
// (start and size are in 512-byte sectors whatever the block size).
func (d SysfsDisks) Region(dev string) (offset, size int64, err error) {
	name := filepath.Base(dev)
	dir := filepath.Join(d.SysRoot, "class", "block", name)
	sectors := func(attr string) (int64, error) {
		s, err := readAttr(filepath.Join(dir, attr))
		if err != nil {
			return 0, err
		}
		return strconv.ParseInt(s, 10, 64)
	}
	if size, err = sectors("size"); err != nil {
		return 0, 0, fmt.Errorf("size of %s: %w", name, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "partition")); err == nil {
		if offset, err = sectors("start"); err != nil {
			return 0, 0, fmt.Errorf("start of %s: %w", name, err)
		}
	}
	return offset * 512, size * 512, nil
}

// ext4Options returns the options the ext4 driver mounted dev with,
// defaults included (procRoot/fs/ext4/<name>/options), e.g. "data=journal".
func ext4Options(procRoot, dev string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(procRoot, "fs", "ext4", filepath.Base(dev), "options"))
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(b)), nil
}
