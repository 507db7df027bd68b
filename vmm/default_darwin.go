package vmm

const defaultDriver = "vz"
