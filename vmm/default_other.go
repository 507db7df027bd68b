//go:build !linux && !darwin

package vmm

const defaultDriver = "qemu"
