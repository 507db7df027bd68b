package qemu

import (
	"fmt"
	"strings"
)

// AccelEnv overrides accelerator selection: kvm, tcg or hvf.
const AccelEnv = "QMOUNT_ACCEL"

// HostFacts are what accelerator selection looks at. Gathering them is
// platform code; deciding is the pure ChooseAccel.
type HostFacts struct {
	GOOS      string // host OS
	HostArch  string // host GOARCH
	GuestArch string // guest GOARCH
	Env       string // value of QMOUNT_ACCEL, if set

	KVMOpenable bool // /dev/kvm opens read-write
	KVMPVM      bool // the kvm_pvm module is loaded (nested PVM: stock kernels hang)
	KVMAPIOK    bool // KVM_GET_API_VERSION is 12 and the basic capabilities are there
	// x86 CPU flags from /proc/cpuinfo.
	VMX, SVM, Hypervisor bool
}

// AccelChoice is ChooseAccel's verdict.
type AccelChoice struct {
	Accel Accel
	// Probe: Accel is only a candidate, to be confirmed by booting the
	// guest kernel under it (and falling back to TCG when that fails).
	Probe  bool
	Reason string
}

// ChooseAccel picks the accelerator from host facts, instantly: it never
// probes. A Probe verdict asks the caller to confirm KVM by a short boot.
func ChooseAccel(f HostFacts) (AccelChoice, error) {
	if f.Env != "" {
		switch a := Accel(strings.ToLower(strings.TrimSpace(f.Env))); a {
		case AccelKVM, AccelTCG, AccelHVF:
			return AccelChoice{Accel: a, Reason: AccelEnv + "=" + f.Env}, nil
		default:
			return AccelChoice{}, fmt.Errorf("%s=%q: want kvm, tcg or hvf", AccelEnv, f.Env)
		}
	}
	tcg := func(why string) (AccelChoice, error) { return AccelChoice{Accel: AccelTCG, Reason: why}, nil }
	if f.GuestArch != f.HostArch {
		return tcg("guest arch " + f.GuestArch + " differs from host arch " + f.HostArch)
	}
	switch f.GOOS {
	case "darwin":
		return AccelChoice{Accel: AccelHVF, Reason: "macOS host"}, nil
	case "linux":
	default:
		return tcg("no accelerator support on " + f.GOOS)
	}
	switch {
	case !f.KVMOpenable:
		return tcg("/dev/kvm is not usable")
	case f.KVMPVM:
		return tcg("KVM is nested PVM (kvm_pvm), where stock kernels hang")
	case !f.KVMAPIOK && f.HostArch == "amd64" && !f.VMX && !f.SVM && f.Hypervisor:
		return tcg("nested KVM without VMX/SVM and without the KVM API")
	case !f.KVMAPIOK:
		return tcg("the KVM API is not usable")
	}
	return AccelChoice{Accel: AccelKVM, Probe: true, Reason: "/dev/kvm is usable"}, nil
}
