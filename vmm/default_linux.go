package vmm

const defaultDriver = "qemu"
