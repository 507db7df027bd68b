package main

import _ "github.com/qmount/qmount/vmm/vz" // registers the Virtualization.framework driver
