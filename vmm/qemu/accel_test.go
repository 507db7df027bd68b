package qemu

import (
	"math"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestChooseAccel(t *testing.T) {
	// A Linux x86 host whose KVM looks fine.
	good := HostFacts{GOOS: "linux", HostArch: "amd64", GuestArch: "amd64",
		KVMOpenable: true, KVMAPIOK: true, VMX: true}
	for _, tc := range []struct {
		name    string
		facts   func(*HostFacts)
		want    Accel
		probe   bool
		wantErr bool
	}{
		{name: "usable kvm is probed", want: AccelKVM, probe: true},
		{name: "env forces tcg", facts: func(f *HostFacts) { f.Env = "tcg" }, want: AccelTCG},
		{name: "env forces kvm without probe", facts: func(f *HostFacts) { f.Env = "KVM"; f.KVMPVM = true }, want: AccelKVM},
		{name: "env hvf", facts: func(f *HostFacts) { f.Env = "hvf" }, want: AccelHVF},
		{name: "bad env", facts: func(f *HostFacts) { f.Env = "xen" }, wantErr: true},
		{name: "no /dev/kvm", facts: func(f *HostFacts) { f.KVMOpenable = false }, want: AccelTCG},
		{name: "nested pvm", facts: func(f *HostFacts) { f.KVMPVM = true }, want: AccelTCG},
		{name: "nested without vmx and kvm api", facts: func(f *HostFacts) {
			f.VMX, f.Hypervisor, f.KVMAPIOK = false, true, false
		}, want: AccelTCG},
		{name: "nested without vmx but api fine is probed", facts: func(f *HostFacts) {
			f.VMX, f.Hypervisor = false, true
		}, want: AccelKVM, probe: true},
		{name: "kvm api broken", facts: func(f *HostFacts) { f.KVMAPIOK = false }, want: AccelTCG},
		{name: "foreign guest arch", facts: func(f *HostFacts) { f.GuestArch = "arm64" }, want: AccelTCG},
		{name: "arm64 linux host probes kvm", facts: func(f *HostFacts) {
			f.HostArch, f.GuestArch, f.VMX = "arm64", "arm64", false
		}, want: AccelKVM, probe: true},
		{name: "macOS arm64", facts: func(f *HostFacts) {
			*f = HostFacts{GOOS: "darwin", HostArch: "arm64", GuestArch: "arm64"}
		}, want: AccelHVF},
		{name: "macOS foreign guest", facts: func(f *HostFacts) {
			*f = HostFacts{GOOS: "darwin", HostArch: "arm64", GuestArch: "amd64"}
		}, want: AccelTCG},
		{name: "other os", facts: func(f *HostFacts) { f.GOOS = "freebsd" }, want: AccelTCG},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := good
			if tc.facts != nil {
				tc.facts(&f)
			}
			c, err := ChooseAccel(f)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("ChooseAccel = %+v, want an error", c)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Accel != tc.want || c.Probe != tc.probe || c.Reason == "" {
				t.Fatalf("ChooseAccel = %+v, want %s probe=%v with a reason", c, tc.want, tc.probe)
			}
		})
	}
}

const cpuinfoXeonVM = `processor	: 0
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) Processor
cpu MHz		: 2600.000
flags		: fpu tsc constant_tsc nonstop_tsc tsc_known_freq hypervisor rdtscp

processor	: 1
model name	: Other
flags		: vmx
`

func TestCPUInfoTSC(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cpuinfo string
		want    int64
	}{
		{name: "vm with a known tsc frequency", cpuinfo: cpuinfoXeonVM, want: 2600000},
		{name: "nominal frequency in the model name", cpuinfo: "model name\t: Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz\ncpu MHz\t\t: 3400.123\nflags\t\t: tsc constant_tsc\n", want: 1900000},
		{name: "bare metal cpu MHz is not trusted", cpuinfo: "model name\t: AMD Ryzen 7 5800X 8-Core Processor\ncpu MHz\t\t: 3800.000\nflags\t\t: tsc constant_tsc\n", want: 0},
		{name: "tsc not invariant", cpuinfo: "model name\t: Intel CPU @ 2.00GHz\nflags\t\t: tsc\n", want: 0},
		{name: "vm without tsc_known_freq", cpuinfo: "model name\t: QEMU Virtual CPU\ncpu MHz\t\t: 2000.0\nflags\t\t: tsc constant_tsc hypervisor\n", want: 0},
		{name: "arm64", cpuinfo: "processor\t: 0\nBogoMIPS\t: 48.00\nFeatures\t: fp asimd\n", want: 0},
		{name: "empty", cpuinfo: "", want: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := TSCKHz(ParseCPUInfo(tc.cpuinfo)); got != tc.want {
				t.Fatalf("TSCKHz = %d, want %d", got, tc.want)
			}
		})
	}
	ci := ParseCPUInfo(cpuinfoXeonVM)
	if ci.Flags["vmx"] || !ci.Flags["hypervisor"] || !strings.Contains(ci.ModelName, "Xeon") {
		t.Fatalf("ParseCPUInfo read beyond the first processor or missed fields: %+v", ci)
	}
}

func TestMeasureTSC(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("no TSC off x86")
	}
	got := measureTSCKHz(20 * time.Millisecond)
	// Any x86 CPU that runs this has a TSC between 100 MHz and 10 GHz.
	if got < 100_000 || got > 10_000_000 {
		t.Fatalf("measured TSC %d kHz", got)
	}
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Skip(err)
	}
	if known := TSCKHz(ParseCPUInfo(string(b))); known > 0 {
		if diff := math.Abs(float64(got-known)) / float64(known); diff > 0.02 {
			t.Errorf("measured %d kHz, /proc/cpuinfo says %d kHz", got, known)
		}
		t.Logf("TSC: measured %d kHz, published %d kHz", got, known)
	}
}
