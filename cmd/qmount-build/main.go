// Command qmount-build builds qmount's guests: it fetches the guest's
// kernel from Debian's packages, builds the guest init, and writes the
// bootable kernel, the initramfs and a manifest to the output directory.
//
//	go run ./cmd/qmount-build guest --name linux --arch amd64 --out build/guests/linux/amd64
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newApp().RunContext(ctx, os.Args)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "qmount-build: %v\n", err)
		os.Exit(1)
	}
}
