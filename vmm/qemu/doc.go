// Package qemu is qmount's QEMU driver (vmm.Driver "qemu", registered on
// Linux hosts).
//
// # Command line
//
// BuildArgv is a pure function from a vmm.Config and a Plan (the host
// facts: binary, machine type, accelerator, transport, TSC frequency) to
// the QEMU invocation, so it is table-tested without QEMU:
//
//   - amd64 guests: qemu-system-x86_64 -M microvm with virtio-mmio devices,
//     booting the uncompressed PVH vmlinux directly (no firmware, no option
//     ROMs, no in-guest decompression); -M q35 with virtio-pci when the
//     QEMU has no microvm. arm64 guests: qemu-system-aarch64 -M virt with
//     virtio-pci, -cpu cortex-a57 under TCG ("max" adds pointer
//     authentication, which TCG emulates slowly), -cpu host otherwise.
//   - -nodefaults -no-user-config -display none -no-reboot, -smp and -m
//     from the Config (one vCPU is faster under TCG).
//   - Console: the guest's UART (ttyS0 on x86, ttyAMA0 on arm64) into
//     Config.ConsoleLog (StateDir/console.log when empty). hvc0 on the
//     virtio-serial bus was measured no faster, and distribution kernels
//     build virtio_console as a module, so hvc0 loses everything printed
//     before /init loads it, panics included.
//   - The driver's kernel parameters come first, the caller's after them
//     (so the caller's win): x86 "reboot=t panic=-1" (a reset, and so a
//     panic, makes QEMU exit under -no-reboot) and tsc_early_khz=<host TSC
//     kHz>; arm64 "panic=-1" (power-off goes through PSCI); "quiet" unless
//     Debug or qmount.debug=1. tsc_early_khz is not only faster: microvm
//     has no HPET or PM timer, and under TCG Debian's kernel cannot
//     calibrate the TSC without it and makes no progress. The frequency
//     comes from sysfs, /proc/cpuinfo (nominal GHz in the model name, or
//     "cpu MHz" under a hypervisor that publishes tsc_known_freq), or is
//     measured with RDTSC for 20 ms.
//   - Disks: -drive if=none,format=F,cache=writeback (guest flushes reach
//     the disk; cache=unsafe only with WithUnsafeCache, for benchmarks),
//     readonly=on for read-only disks, discard=unmap for the others,
//     serial=qmountN on the virtio-blk device. A disk given as an open file
//     goes through an fd set (-add-fd, file=/dev/fdset/N); QEMU only takes
//     an fd whose access mode matches its open, so Start reopens a
//     read-write file read-only for a read-only disk.
//   - Transport: vhost-vsock (guest-cid random >= 3, retried when QEMU
//     reports the CID in use) where /dev/vhost-vsock opens read-write and
//     the host has AF_VSOCK; otherwise one virtserialport per wire.Port,
//     each backed by a unix socket chardev StateDir/<port name>.sock.
//   - QMP on StateDir/qmp.sock.
//
// Measured on a 2-core nested-virtualisation host under TCG (QEMU 7.2,
// Debian 6.1 kernel, a test init that loads 4 virtio modules and writes
// to the control port; QEMU CPU seconds to that line, medians of 5-6
// interleaved runs on a loaded machine): everything below is within
// noise (2.4-2.8 s): tb-size 64/256 MiB against the 1 GiB default,
// thread=single, console hvc0 against ttyS0, pit=off,pic=off, pci=off,
// -m 256 against 512. So the command line keeps QEMU's defaults for
// them. "quiet" saves about 0.4 s of wall time on the 8250 console.
// microvm's acpi=off does not boot (no virtio-mmio devices are found).
//
// # Accelerator
//
// ChooseAccel decides instantly from HostFacts: QMOUNT_ACCEL (kvm, tcg,
// hvf) wins; a foreign guest arch means TCG; macOS means HVF; on Linux
// KVM is only a candidate when /dev/kvm opens read-write, the KVM API
// answers, and the host is not nested PVM (kvm_pvm loaded: stock kernels
// hang there). A candidate is confirmed by booting the guest kernel under
// it for at most 5 s, and the verdict is cached in
// $XDG_CACHE_HOME/qmount/accel.json keyed by QEMU binary and version, host
// kernel release and guest arch.
//
// # Life cycle
//
// Start returns once QEMU's QMP monitor has greeted (the machine is built
// and running; the guest is booting). On any failure it kills QEMU and
// returns QEMU's stderr in the error. QEMU runs in its own process group,
// with SIGKILL as parent-death signal unless WithPdeathsig(false); its
// stdout and stderr go to StateDir/qemu.stderr.
//
// The caller owns StateDir: it must exist and be private. The driver
// creates its sockets there and removes them when QEMU exits (also after
// SIGKILL); qemu.stderr and the console log stay for the caller.
//
// Wait returns nil for an exit with status 0 unless the console shows a
// kernel panic (panic=-1 turns a panic into a reset, which -no-reboot
// turns into a normal exit); otherwise an error with QEMU's stderr and
// the last console lines. Shutdown sends QMP system_powerdown and waits
// until ctx's deadline (10 s without one), then QMP quit, then SIGKILL.
// A minimal guest ignores the ACPI power button, so the clean path is the
// control channel's shutdown message, which callers send first; Shutdown
// is the backstop.
package qemu
