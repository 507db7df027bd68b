package vz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"

	"github.com/Code-Hex/vz/v3"

	"github.com/qmount/qmount/vmm"
)

func init() { vmm.Register(New()) }

// Driver runs guests with Apple's Virtualization.framework, in-process.
// It needs macOS 12.3 or newer (virtio-blk device identifiers), 14 or
// newer for whole disks (/dev/diskN), and a binary signed with the
// com.apple.security.virtualization entitlement (see entitlements.plist).
type Driver struct {
	log *slog.Logger
}

var _ vmm.Driver = (*Driver)(nil)

// Option configures a Driver.
type Option func(*Driver)

// WithLogger sets the logger; the default discards.
func WithLogger(l *slog.Logger) Option {
	return func(d *Driver) {
		if l != nil {
			d.log = l
		}
	}
}

// New returns a vz driver.
func New(opts ...Option) *Driver {
	d := &Driver{log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(d)
	}
	return d
}

// Name implements vmm.Driver.
func (*Driver) Name() string { return "vz" }

// Start implements vmm.Driver. Disks given by Path are opened by the
// driver (and closed when the machine exits); a Disk.File stays the
// caller's: it must stay open until Wait returns (the framework uses the
// descriptor, it does not duplicate it).
func (d *Driver) Start(ctx context.Context, cfg vmm.Config) (_ vmm.Machine, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Arch != "" && cfg.Arch != runtime.GOARCH {
		return nil, fmt.Errorf("vz runs %s guests on this Mac, not %s", runtime.GOARCH, cfg.Arch)
	}
	if err := checkKernel(cfg.Kernel); err != nil {
		return nil, err
	}
	memBytes, ncpu, err := checkResources(cfg.MemoryMiB, cfg.CPUs, limits{
		MinMemory: vz.VirtualMachineConfigurationMinimumAllowedMemorySize(),
		MaxMemory: vz.VirtualMachineConfigurationMaximumAllowedMemorySize(),
		MinCPUs:   vz.VirtualMachineConfigurationMinimumAllowedCPUCount(),
		MaxCPUs:   vz.VirtualMachineConfigurationMaximumAllowedCPUCount(),
	})
	if err != nil {
		return nil, fmt.Errorf("sizing the vm: %w", err)
	}

	// Files the machine owns; closed on a failed start or after exit.
	var files []*os.File
	defer func() {
		if err != nil {
			closeAll(files)
		}
	}()

	boot, err := vz.NewLinuxBootLoader(cfg.Kernel,
		vz.WithCommandLine(consoleCmdline(cfg.Cmdline)),
		vz.WithInitrd(cfg.Initrd))
	if err != nil {
		return nil, fmt.Errorf("creating the linux boot loader: %w", err)
	}
	vmCfg, err := vz.NewVirtualMachineConfiguration(boot, ncpu, memBytes)
	if err != nil {
		return nil, fmt.Errorf("creating the vm configuration: %w", err)
	}

	// Console: the guest's hvc0 goes to the console log; it reads nothing.
	consoleFiles, err := openConsole(cfg.ConsoleLog)
	files = append(files, consoleFiles...)
	if err != nil {
		return nil, err
	}
	att, err := vz.NewFileHandleSerialPortAttachment(consoleFiles[0], consoleFiles[1])
	if err != nil {
		return nil, fmt.Errorf("attaching the console log: %w", err)
	}
	console, err := vz.NewVirtioConsoleDeviceSerialPortConfiguration(att)
	if err != nil {
		return nil, fmt.Errorf("creating the virtio console: %w", err)
	}
	vmCfg.SetSerialPortsVirtualMachineConfiguration([]*vz.VirtioConsoleDeviceSerialPortConfiguration{console})

	// Disks.
	storage := make([]vz.StorageDeviceConfiguration, 0, len(cfg.Disks))
	for i, disk := range cfg.Disks {
		dev, opened, err := d.blockDevice(disk)
		if opened != nil {
			files = append(files, opened)
		}
		if err != nil {
			return nil, fmt.Errorf("disk %d (%s): %w", i, diskName(disk), err)
		}
		storage = append(storage, dev)
	}
	vmCfg.SetStorageDevicesVirtualMachineConfiguration(storage)

	// vsock: the control and 9P streams (wire.ControlPort, wire.NinePPort).
	sock, err := vz.NewVirtioSocketDeviceConfiguration()
	if err != nil {
		return nil, fmt.Errorf("creating the virtio socket device: %w", err)
	}
	vmCfg.SetSocketDevicesVirtualMachineConfiguration([]vz.SocketDeviceConfiguration{sock})

	// Entropy, so the guest's crng is ready at once (LUKS, mkfs uuids).
	entropy, err := vz.NewVirtioEntropyDeviceConfiguration()
	if err != nil {
		return nil, fmt.Errorf("creating the entropy device: %w", err)
	}
	vmCfg.SetEntropyDevicesVirtualMachineConfiguration([]*vz.VirtioEntropyDeviceConfiguration{entropy})

	// A memory balloon lets macOS reclaim the guest's free memory. It is
	// optional: nothing in qmount inflates it yet.
	if balloon, err := vz.NewVirtioTraditionalMemoryBalloonDeviceConfiguration(); err == nil {
		vmCfg.SetMemoryBalloonDevicesVirtualMachineConfiguration([]vz.MemoryBalloonDeviceConfiguration{balloon})
	} else {
		d.log.Debug("no memory balloon", "err", err)
	}

	if ok, err := vmCfg.Validate(); !ok || err != nil {
		if err == nil {
			err = errors.New("rejected without a reason")
		}
		return nil, fmt.Errorf("validating the vm configuration: %w", explain(err))
	}
	vm, err := vz.NewVirtualMachine(vmCfg)
	if err != nil {
		return nil, fmt.Errorf("creating the vm: %w", explain(err))
	}
	socks := vm.SocketDevices()
	if len(socks) == 0 {
		return nil, errors.New("creating the vm: no virtio socket device")
	}

	m := newMachine(vm, socks[0], files, d.log)
	files = nil // the machine owns them now, and closes them once the vm is done with them
	if err := m.start(ctx); err != nil {
		return nil, fmt.Errorf("starting the vm: %w", explain(err))
	}
	d.log.Info("vm running", "cpus", ncpu, "memory_mib", cfg.MemoryMiB, "disks", len(cfg.Disks))
	return m, nil
}

// blockDevice makes the virtio-blk device of one disk. It returns the file
// it opened itself, if any, for the machine to close.
//
// Logical block size: vz v3.7.1 (and Virtualization.framework's
// VZVirtioBlockDeviceConfiguration up to macOS 15) has no knob for the
// virtio-blk block size; the framework decides what the guest sees in
// /sys/block/vdX/queue/logical_block_size. For images that is 512. For a
// 4Kn drive attached whole (VZDiskBlockDeviceStorageDeviceAttachment) the
// framework is expected to report the device's 4096-byte block, but this
// is not documented and could not be tested without a Mac and a 4Kn
// drive: the guest must read logical_block_size rather than assume 512
// (a GPT written with 4096-byte sectors is at byte 4096, not 512), and
// where a 4Kn-formatted image is attached as a file it has to be looped
// with --sector-size 4096 in the guest.
func (d *Driver) blockDevice(disk vmm.Disk) (_ *vz.VirtioBlockDeviceConfiguration, opened *os.File, err error) {
	switch disk.Format {
	case "", "raw":
	default:
		return nil, nil, fmt.Errorf("format %q: vz attaches raw images only", disk.Format)
	}
	if err := checkIdentifier(disk.Serial); err != nil {
		return nil, nil, err
	}
	var fi os.FileInfo
	if disk.File != nil {
		fi, err = disk.File.Stat()
	} else {
		fi, err = os.Stat(disk.Path)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("stat: %w", err)
	}
	kind, err := kindOf(fi)
	if err != nil {
		return nil, nil, err
	}

	var att vz.StorageDeviceAttachment
	switch kind {
	case imageDisk:
		path := disk.Path
		if disk.File != nil {
			// The image attachment takes a path, not a descriptor.
			path = disk.File.Name()
		}
		// Cached host I/O with full synchronisation: a guest flush
		// becomes F_FULLFSYNC on the image, so what the guest fsyncs is
		// on stable storage. Automatic (uncached) caching corrupts ext4
		// in Linux guests (lima-vm/lima#1957, utmapp/UTM#5919).
		att, err = vz.NewDiskImageStorageDeviceAttachmentWithCacheAndSync(path, disk.ReadOnly,
			vz.DiskImageCachingModeCached, vz.DiskImageSynchronizationModeFull)
		if err != nil {
			return nil, nil, fmt.Errorf("attaching image: %w", err)
		}
	case blockDisk:
		f := disk.File
		if f == nil {
			flag := os.O_RDWR
			if disk.ReadOnly {
				flag = os.O_RDONLY
			}
			if f, err = os.OpenFile(disk.Path, flag, 0); err != nil {
				return nil, nil, fmt.Errorf("opening device (run as root, or give a file opened as root): %w", err)
			}
			opened = f
		}
		// Full: the guest's flushes reach the device.
		att, err = vz.NewDiskBlockDeviceStorageDeviceAttachment(f, disk.ReadOnly, vz.DiskSynchronizationModeFull)
		if err != nil {
			if errors.Is(err, vz.ErrUnsupportedOSVersion) {
				err = fmt.Errorf("attaching a whole disk needs macOS 14 or newer: %w", err)
			}
			return nil, opened, fmt.Errorf("attaching device: %w", err)
		}
	}

	dev, err := vz.NewVirtioBlockDeviceConfiguration(att)
	if err != nil {
		return nil, opened, fmt.Errorf("creating virtio-blk device: %w", err)
	}
	// The guest finds its disks by this identifier (virtio-blk serial,
	// /sys/block/vdX/serial).
	if err := dev.SetBlockDeviceIdentifier(disk.Serial); err != nil {
		if errors.Is(err, vz.ErrUnsupportedOSVersion) {
			err = fmt.Errorf("virtio-blk serials need macOS 12.3 or newer: %w", err)
		}
		return nil, opened, fmt.Errorf("setting serial %q: %w", disk.Serial, err)
	}
	d.log.Debug("disk", "serial", disk.Serial, "kind", kind, "read_only", disk.ReadOnly)
	return dev, opened, nil
}

// openConsole returns the console's input (/dev/null) and output (the
// log, appended to; /dev/null without one).
func openConsole(path string) ([]*os.File, error) {
	in, err := os.Open(os.DevNull)
	if err != nil {
		return nil, fmt.Errorf("opening console input: %w", err)
	}
	if path == "" {
		path = os.DevNull
	}
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return []*os.File{in}, fmt.Errorf("opening console log: %w", err)
	}
	return []*os.File{in, out}, nil
}

func diskName(d vmm.Disk) string {
	if d.File != nil {
		return d.File.Name()
	}
	return d.Path
}

// explain adds the remedy to the framework's errors that have one.
func explain(err error) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "com.apple.security.virtualization"):
		return fmt.Errorf("%w (sign the binary: codesign --entitlements vmm/vz/entitlements.plist -s - BINARY)", err)
	case errors.Is(err, vz.ErrUnsupportedOSVersion):
		return fmt.Errorf("%w (qmount needs macOS 12.3 or newer)", err)
	}
	return err
}

func closeAll(files []*os.File) error {
	var errs []error
	for _, f := range files {
		if err := f.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
