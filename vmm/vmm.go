// Package vmm defines the small interface qmount needs from a hypervisor,
// and the configuration of a guest. Drivers live in sub-packages
// (vmm/qemu for Linux hosts, vmm/vz for macOS) and register themselves.
package vmm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"sync"

	"github.com/qmount/qmount/internal/wire"
)

// Driver is a hypervisor that can run a guest.
type Driver interface {
	// Name is the driver's short name ("qemu", "vz").
	Name() string
	// Start boots a guest described by cfg. It returns once the VM process
	// (or framework VM) is running; the guest may still be booting. On
	// error nothing is left running. ctx bounds the start only, not the
	// machine's life.
	Start(ctx context.Context, cfg Config) (Machine, error)
}

// Machine is a running guest. All methods are safe for concurrent use.
type Machine interface {
	// Dial opens the stream of port to the guest. On virtio-serial it
	// returns the host end of the port (it may be dialled once per port);
	// on vsock it connects to the guest's listener. The stream works once
	// the guest opens its side; until then reads wait.
	Dial(ctx context.Context, port wire.Port) (net.Conn, error)
	// Wait blocks until the machine has exited and returns the same result
	// to every caller: nil for a clean power-off.
	Wait(ctx context.Context) error
	// Shutdown asks the guest to power off (ACPI/QMP or the framework's
	// request) and waits for it; at ctx's deadline the machine is killed.
	// The clean path for a mounted guest is the control channel's
	// shutdown message first; Shutdown is the hypervisor-level backstop.
	Shutdown(ctx context.Context) error
	// Kill stops the machine at once.
	Kill() error
	// PID is the hypervisor process' id, or 0 when it runs in-process.
	PID() int
}

// Disk is one virtio-blk disk of the guest.
type Disk struct {
	// Path of a raw image or block device. Exactly one of Path and File.
	Path string
	// File is an already opened device or image (for privilege drops).
	File *os.File
	// Format is the image format for drivers that convert ("raw",
	// "qcow2"...); empty means raw.
	Format   string
	ReadOnly bool
	// Serial is the virtio serial the guest finds the disk by
	// (wire.DiskSerial(i)).
	Serial string
}

// Config describes a guest.
type Config struct {
	Kernel  string // kernel image path (vmlinux, Image)
	Initrd  string // initramfs path
	Cmdline string // kernel command line (never secrets)
	Arch    string // guest architecture, GOARCH style: amd64, arm64
	// MemoryMiB and CPUs size the guest.
	MemoryMiB int
	CPUs      int
	Disks     []Disk
	// ConsoleLog receives the guest's console output.
	ConsoleLog string
	// StateDir holds the driver's sockets and runtime files for this
	// machine; it must exist and be private to the user.
	StateDir string
}

// Validate checks a Config for mistakes a driver cannot recover from.
func (c *Config) Validate() error {
	var errs []error
	if c.Kernel == "" {
		errs = append(errs, errors.New("no kernel"))
	}
	if c.Initrd == "" {
		errs = append(errs, errors.New("no initrd"))
	}
	if c.MemoryMiB < 64 {
		errs = append(errs, fmt.Errorf("memory %d MiB is below 64 MiB", c.MemoryMiB))
	}
	if c.CPUs < 1 {
		errs = append(errs, fmt.Errorf("cpus %d is below 1", c.CPUs))
	}
	if c.StateDir == "" {
		errs = append(errs, errors.New("no state dir"))
	}
	seen := map[string]bool{}
	for i, d := range c.Disks {
		if (d.Path == "") == (d.File == nil) {
			errs = append(errs, fmt.Errorf("disk %d: exactly one of path and file", i))
		}
		if d.Serial == "" || seen[d.Serial] {
			errs = append(errs, fmt.Errorf("disk %d: missing or duplicate serial %q", i, d.Serial))
		}
		seen[d.Serial] = true
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid vm config: %w", err)
	}
	return nil
}

var (
	mu      sync.Mutex
	drivers = map[string]Driver{}
)

// Register makes a driver available by name. Drivers call it from init.
func Register(d Driver) {
	mu.Lock()
	defer mu.Unlock()
	drivers[d.Name()] = d
}

// Get returns the named driver, or the only/default one when name is empty.
func Get(name string) (Driver, error) {
	mu.Lock()
	defer mu.Unlock()
	if name == "" {
		if len(drivers) == 1 {
			for _, d := range drivers {
				return d, nil
			}
		}
		name = defaultDriver
	}
	d, ok := drivers[name]
	if !ok {
		names := make([]string, 0, len(drivers))
		for n := range drivers {
			names = append(names, n)
		}
		sort.Strings(names)
		return nil, fmt.Errorf("no hypervisor driver %q on this platform (have %v)", name, names)
	}
	return d, nil
}
