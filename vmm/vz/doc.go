// Package vz is qmount's macOS hypervisor driver: it runs each guest
// in-process with Apple's Virtualization.framework through
// github.com/Code-Hex/vz/v3, and registers itself as the vmm driver "vz".
//
// A guest gets: VZLinuxBootLoader with an uncompressed arm64 Image, the
// initramfs and the command line (console=hvc0 appended); one virtio-blk
// device per disk, its serial (blockDeviceIdentifier, macOS 12.3+) set to
// Disk.Serial so the guest finds it, image files attached with cached I/O
// and full synchronisation (guest flushes are F_FULLFSYNC), whole disks
// (/dev/diskN, macOS 14+) through a descriptor the caller may open as root
// before dropping privileges; read-only honoured at the device; a
// virtio-socket device whose Connect(port) gives Machine.Dial's
// connections (wire.ControlPort.Vsock, wire.NinePPort.Vsock); a virtio
// console writing to Config.ConsoleLog; an entropy device and a memory
// balloon.
//
// The binary must carry the com.apple.security.virtualization
// entitlement, or the framework refuses to create the VM:
//
//	codesign --force --entitlements vmm/vz/entitlements.plist -s - BINARY
//
// (ad-hoc signing, "-s -", is enough for a locally built binary.)
//
// Only darwin files use the framework. The pure checks (kernel image
// format, sizes, serials, disk kinds, the vsock dial loop) build
// everywhere, so their tests also run on Linux. The darwin code cannot be
// compiled off a Mac (cgo with Apple's SDK); `make check-darwin`
// type-checks it for darwin/arm64 with import "C" faked.
package vz
