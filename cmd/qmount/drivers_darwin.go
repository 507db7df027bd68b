package main

import (
	"log/slog"

	"github.com/qmount/qmount/vmm"
	_ "github.com/qmount/qmount/vmm/vz" // registers the Virtualization.framework driver
)

// newDriver returns the hypervisor driver for a mount's supervisor.
func newDriver(*slog.Logger) (vmm.Driver, error) { return vmm.Get("") }
