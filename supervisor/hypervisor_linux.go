package supervisor

import (
	"fmt"
	"os/exec"
)

// checkHypervisor makes sure QEMU for the guest's architecture is installed.
func checkHypervisor(arch string) error {
	bin, pkg := "qemu-system-x86_64", "qemu-system-x86"
	if arch == "arm64" {
		bin, pkg = "qemu-system-aarch64", "qemu-system-arm"
	}
	if _, err := exec.LookPath(bin); err != nil {
		return fmt.Errorf("%s not found: install %s (sudo apt-get install %s)", bin, pkg, pkg)
	}
	return nil
}

// directReads: QEMU writes the guest's disk with the host's own file
// I/O (page cache, or O_DIRECT, which drops the pages it overwrites), so
// a read of the image on the host sees every write the guest completed.
const directReads = true
