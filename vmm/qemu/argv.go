package qemu

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/qmount/qmount/internal/wire"
	"github.com/qmount/qmount/vmm"
)

// Accel is a QEMU accelerator.
type Accel string

// The accelerators the driver uses.
const (
	AccelTCG Accel = "tcg"
	AccelKVM Accel = "kvm"
	AccelHVF Accel = "hvf"
)

// Transport is how host and guest streams travel.
type Transport string

const (
	// TransportSerial carries each wire.Port on a virtserialport backed by
	// a unix socket chardev in the state dir.
	TransportSerial Transport = "virtio-serial"
	// TransportVsock uses vhost-vsock with a guest CID.
	TransportVsock Transport = "vsock"
)

// Machine types the builder knows.
const (
	MachineMicrovm = "microvm" // x86: virtio-mmio, no firmware, PVH boot
	MachineQ35     = "q35"     // x86 fallback: virtio-pci
	MachineVirt    = "virt"    // arm64: virtio-pci
)

// Plan holds the host facts BuildArgv needs on top of a vmm.Config: all
// resolved before, so that BuildArgv is a pure function.
type Plan struct {
	Binary    string // qemu-system-x86_64, qemu-system-aarch64 (path or name)
	Machine   string // MachineMicrovm, MachineQ35, MachineVirt; empty: the arch's default
	Accel     Accel
	Transport Transport
	CID       uint32 // guest CID for TransportVsock (>= 3)
	// TSCKHz is the host TSC frequency, passed to x86 guests as
	// tsc_early_khz (saves the guest's calibration); 0 = unknown.
	TSCKHz int64
	// Debug keeps the guest kernel's console verbose (no "quiet").
	Debug bool
	// UnsafeCache ignores guest flushes (cache=unsafe): benchmarks only.
	UnsafeCache bool
	// FirstFD is the descriptor number the first extra file gets in the
	// child (3 with os/exec); disks given as files are passed this way.
	FirstFD int
}

// Invocation is a QEMU command line and what goes with it.
type Invocation struct {
	Argv []string
	// ExtraFiles are the child's descriptors FirstFD, FirstFD+1, ...
	ExtraFiles []*os.File
	// QMP is the QMP socket path.
	QMP string
	// Sockets maps a wire port name to its unix socket (virtio-serial).
	Sockets map[string]string
	// Cmdline is the complete guest kernel command line.
	Cmdline string
}

// Formats are the image formats a Disk may name (QEMU block drivers).
var Formats = []string{"raw", "qcow2", "qed", "vmdk", "vdi", "vhdx", "vpc", "parallels", "dmg"}

// maxSerial is virtio-blk's serial length (VIRTIO_BLK_ID_BYTES).
const maxSerial = 20

// QMPSocket is the name of the QMP socket in the state dir.
const QMPSocket = "qmp.sock"

// SocketPath is the unix socket of a virtio-serial port in stateDir.
func SocketPath(stateDir string, port wire.Port) string {
	return filepath.Join(stateDir, port.Name+".sock")
}

// maxSockPath is the usable length of sockaddr_un.sun_path.
const maxSockPath = 107

// DefaultMachine is the machine type for a guest arch.
func DefaultMachine(arch string) string {
	if arch == "arm64" {
		return MachineVirt
	}
	return MachineMicrovm
}

// BuildArgv returns the QEMU invocation for cfg under plan. It checks what
// it relies on but touches nothing on the host.
func BuildArgv(cfg *vmm.Config, plan Plan) (*Invocation, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	arch := cfg.Arch
	if arch == "" {
		return nil, errors.New("building qemu argv: no guest arch")
	}
	machine := plan.Machine
	if machine == "" {
		machine = DefaultMachine(arch)
	}
	switch {
	case arch == "amd64" && (machine == MachineMicrovm || machine == MachineQ35):
	case arch == "arm64" && machine == MachineVirt:
	default:
		return nil, fmt.Errorf("building qemu argv: machine %q for guest arch %q is not supported", machine, arch)
	}
	if plan.Binary == "" {
		return nil, errors.New("building qemu argv: no qemu binary")
	}
	switch plan.Accel {
	case AccelTCG, AccelKVM, AccelHVF:
	default:
		return nil, fmt.Errorf("building qemu argv: unknown accelerator %q", plan.Accel)
	}
	mmio := machine == MachineMicrovm // virtio-mmio, else virtio-pci
	dev := func(kind string) string {
		if mmio {
			return kind + "-device"
		}
		return kind + "-pci"
	}

	inv := &Invocation{QMP: filepath.Join(cfg.StateDir, QMPSocket), Sockets: map[string]string{}}
	a := []string{plan.Binary}
	add := func(s ...string) { a = append(a, s...) }

	switch machine {
	case MachineMicrovm:
		// No option ROMs (PVH boot needs none); the RTC gives the guest
		// wall time. Keep ACPI: microvm's ACPI GED is how the guest's
		// power-off (and the PCI-less device list) reaches the kernel.
		add("-M", "microvm,x-option-roms=off,rtc=on")
	case MachineQ35:
		add("-M", "q35")
	case MachineVirt:
		add("-M", "virt")
	}
	// TCG with QEMU's defaults: tb-size 64/256 MiB and thread=single
	// measured no faster than the default (see the package doc).
	add("-accel", string(plan.Accel))
	switch {
	case plan.Accel != AccelTCG:
		add("-cpu", "host")
	case arch == "arm64":
		// "max" adds pointer authentication, which TCG emulates slowly.
		add("-cpu", "cortex-a57")
	default:
		add("-cpu", "max")
	}
	add("-smp", strconv.Itoa(cfg.CPUs), "-m", strconv.Itoa(cfg.MemoryMiB))
	add("-nodefaults", "-no-user-config", "-display", "none", "-no-reboot")

	if err := checkPath("kernel", cfg.Kernel); err != nil {
		return nil, err
	}
	if err := checkPath("initrd", cfg.Initrd); err != nil {
		return nil, err
	}
	inv.Cmdline = kernelCmdline(cfg, arch, plan)
	add("-kernel", cfg.Kernel, "-initrd", cfg.Initrd, "-append", inv.Cmdline)

	console := cfg.ConsoleLog
	if console == "" {
		console = filepath.Join(cfg.StateDir, "console.log")
	}
	add("-chardev", "file,id=con,path="+escape(console), "-serial", "chardev:con")
	if len(inv.QMP) > maxSockPath {
		return nil, fmt.Errorf("building qemu argv: state dir %q is too long for unix sockets", cfg.StateDir)
	}
	add("-qmp", "unix:"+escape(inv.QMP)+",server=on,wait=off")

	fd := plan.FirstFD
	for i, d := range cfg.Disks {
		opts, err := driveOpts(i, d, plan, func(f *os.File) string {
			inv.ExtraFiles = append(inv.ExtraFiles, f)
			set := len(inv.ExtraFiles)
			add("-add-fd", fmt.Sprintf("fd=%d,set=%d", fd, set))
			fd++
			return "/dev/fdset/" + strconv.Itoa(set)
		})
		if err != nil {
			return nil, err
		}
		add("-drive", opts)
		add("-device", fmt.Sprintf("%s,drive=disk%d,serial=%s", dev("virtio-blk"), i, d.Serial))
	}

	switch plan.Transport {
	case TransportSerial:
		add("-device", dev("virtio-serial"))
		for i, p := range wire.Ports {
			path := SocketPath(cfg.StateDir, p)
			if len(path) > maxSockPath {
				return nil, fmt.Errorf("building qemu argv: state dir %q is too long for unix sockets", cfg.StateDir)
			}
			inv.Sockets[p.Name] = path
			id := "port" + strconv.Itoa(i)
			add("-chardev", "socket,id="+id+",path="+escape(path)+",server=on,wait=off",
				"-device", "virtserialport,chardev="+id+",name="+p.Name)
		}
	case TransportVsock:
		if plan.CID < 3 || plan.CID == ^uint32(0) {
			return nil, fmt.Errorf("building qemu argv: bad guest cid %d", plan.CID)
		}
		add("-device", fmt.Sprintf("%s,guest-cid=%d", dev("vhost-vsock"), plan.CID))
	default:
		return nil, fmt.Errorf("building qemu argv: unknown transport %q", plan.Transport)
	}
	inv.Argv = a
	return inv, nil
}

// kernelCmdline is the driver's part of the command line followed by the
// caller's (so that the caller's settings win).
func kernelCmdline(cfg *vmm.Config, arch string, plan Plan) string {
	var p []string
	if arch == "arm64" {
		// The PL011 UART; power-off goes through PSCI.
		p = append(p, "console=ttyAMA0", "panic=-1")
	} else {
		// The 8250 UART is built into distribution kernels, so the log
		// starts at the first message (virtio_console usually is a
		// module: hvc0 would miss everything before /init loads it).
		// reboot=t: a triple fault resets at once; with -no-reboot
		// QEMU then exits. panic=-1: a panic resets (and exits).
		p = append(p, "console=ttyS0", "reboot=t", "panic=-1")
		if plan.TSCKHz > 0 {
			p = append(p, "tsc_early_khz="+strconv.FormatInt(plan.TSCKHz, 10))
		}
	}
	if !plan.Debug && !debugRequested(cfg.Cmdline) {
		p = append(p, "quiet")
	}
	if c := strings.TrimSpace(cfg.Cmdline); c != "" {
		p = append(p, c)
	}
	return strings.Join(p, " ")
}

// debugRequested reports whether the command line asks the guest for debug
// output (qmount.debug=1).
func debugRequested(cmdline string) bool {
	v, ok := wire.ParseCmdline(cmdline)[wire.ParamDebug]
	return ok && v != "0" && v != "false"
}

// driveOpts returns the -drive option string of disk i. fdPath registers
// an open file and returns the path QEMU opens it by.
func driveOpts(i int, d vmm.Disk, plan Plan, fdPath func(*os.File) string) (string, error) {
	format := d.Format
	if format == "" {
		format = "raw"
	}
	known := false
	for _, f := range Formats {
		known = known || f == format
	}
	if !known {
		return "", fmt.Errorf("building qemu argv: disk %d: unknown image format %q", i, d.Format)
	}
	if len(d.Serial) > maxSerial || strings.ContainsAny(d.Serial, ",= \t\n") {
		return "", fmt.Errorf("building qemu argv: disk %d: bad serial %q (at most %d characters, no commas)", i, d.Serial, maxSerial)
	}
	var file string
	if d.File != nil {
		file = fdPath(d.File)
	} else {
		if err := checkPath("disk", d.Path); err != nil {
			return "", err
		}
		file = d.Path
	}
	// writeback: the host page cache absorbs writes and the guest's
	// flushes are honoured (fdatasync). Never "unsafe" unless asked.
	cache := "writeback"
	if plan.UnsafeCache {
		cache = "unsafe"
	}
	o := fmt.Sprintf("if=none,id=disk%d,file=%s,format=%s,cache=%s", i, escape(file), format, cache)
	if d.ReadOnly {
		o += ",readonly=on"
	} else {
		o += ",discard=unmap"
	}
	return o, nil
}

// escape doubles commas, QEMU's quoting inside an option value.
func escape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

func checkPath(what, p string) error {
	if p == "" {
		return fmt.Errorf("building qemu argv: no %s path", what)
	}
	if strings.ContainsAny(p, "\x00\n") {
		return fmt.Errorf("building qemu argv: bad %s path %q", what, p)
	}
	return nil
}
