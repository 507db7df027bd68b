//go:build !linux

// Command qmount-init is the guest's PID 1; it runs only inside a Linux
// guest. On other systems it says so, so that `go build ./...` and
// `go vet ./...` work everywhere.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "qmount-init: runs only as /init of a Linux guest")
	os.Exit(1)
}
