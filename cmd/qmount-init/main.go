//go:build linux

// Command qmount-init is the guest's PID 1 (/init in the initramfs): it
// mounts what the host asks for with the real Linux driver and serves it
// over 9P. Build it static: CGO_ENABLED=0 go build -ldflags='-s -w'.
package main

import "github.com/qmount/qmount/guests/agent"

func main() { agent.Init() }
