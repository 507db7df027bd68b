package main

import (
	"log/slog"

	"github.com/qmount/qmount/vmm"
	"github.com/qmount/qmount/vmm/qemu" // also registers the QEMU driver
)

// newDriver returns the hypervisor driver for a mount's supervisor. QEMU
// must outlive a supervisor that is killed (kill -9): its guest then notices
// the lost control connection, syncs, unmounts and powers off by itself,
// instead of being killed with unwritten data; `qmount stop` ends a VM
// that stays.
func newDriver(log *slog.Logger) (vmm.Driver, error) {
	return qemu.New(qemu.WithPdeathsig(false), qemu.WithLogger(log)), nil
}
