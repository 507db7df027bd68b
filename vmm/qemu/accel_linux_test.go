package qemu

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// On a nested-PVM host (this project's CI kind) the heuristics alone must
// pick TCG: no probe, nothing cached.
func TestChooseAccelOnThisHost(t *testing.T) {
	if _, err := os.Stat("/sys/module/kvm_pvm"); err != nil {
		t.Skip("not a nested PVM host (no /sys/module/kvm_pvm)")
	}
	g := hostGuest(t) // before XDG_CACHE_HOME moves the Go build cache
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	t.Setenv(AccelEnv, "")
	d := New()
	cfg := baseConfig(g, stateDir(t))
	p, err := d.plan(context.Background(), &cfg)
	if err != nil {
		t.Fatal(err)
	}
	if p.Accel != AccelTCG {
		t.Fatalf("accel = %s, want tcg", p.Accel)
	}
	if p.Machine != MachineMicrovm && runtime.GOARCH == "amd64" {
		t.Errorf("machine = %s, want microvm", p.Machine)
	}
	if p.Transport != TransportSerial && !vsockUsable() {
		t.Errorf("transport = %s without vhost-vsock", p.Transport)
	}
	if _, err := os.Stat(filepath.Join(os.Getenv("XDG_CACHE_HOME"), "qmount", "accel.json")); err == nil {
		t.Error("a probe verdict was cached: the heuristics should have decided")
	}
}

func TestProbeAccel(t *testing.T) {
	g := hostGuest(t)
	bin, err := findBinary(g.arch)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// TCG always works: the probe must see the kernel reach /init.
	ok, why := probeAccel(ctx, 60*time.Second, bin, g.arch, DefaultMachine(g.arch), AccelTCG, g.kernel, g.initrd)
	if !ok {
		t.Fatalf("TCG probe failed: %s", why)
	}
	// On nested PVM the stock kernel hangs under KVM: the probe must say
	// no at its deadline.
	if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil {
		ok, why := probeAccel(ctx, 2*time.Second, bin, g.arch, DefaultMachine(g.arch), AccelKVM, g.kernel, g.initrd)
		if ok {
			t.Fatalf("KVM probe on nested PVM succeeded: %s", why)
		}
		t.Logf("KVM probe: %s", why)
	}
}

func TestAccelCache(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	k1, k2 := probeKey("/usr/bin/qemu", "QEMU 7.2", "amd64"), probeKey("/usr/bin/qemu", "QEMU 8.0", "amd64")
	if k1 == k2 {
		t.Fatal("probe key ignores the qemu version")
	}
	if err := writeAccelCache(k1, accelVerdict{Accel: AccelKVM, Reason: "booted"}); err != nil {
		t.Fatal(err)
	}
	if err := writeAccelCache(k2, accelVerdict{Accel: AccelTCG, Reason: "hung"}); err != nil {
		t.Fatal(err)
	}
	m := readAccelCache()
	if m[k1].Accel != AccelKVM || m[k2].Accel != AccelTCG || len(m) != 2 {
		t.Fatalf("cache = %+v", m)
	}
}
