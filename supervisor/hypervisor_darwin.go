package supervisor

// checkHypervisor: Virtualization.framework is part of macOS.
func checkHypervisor(string) error { return nil }

// directReads is off until reading a disk that Virtualization.framework
// writes has been shown coherent on a Mac (its disk attachments may
// cache in the hypervisor process).
const directReads = false
