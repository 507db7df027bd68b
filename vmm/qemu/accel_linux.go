package qemu

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// probeTimeout bounds the KVM probe boot. A working KVM reaches /init in
// well under a second.
const probeTimeout = 5 * time.Second

// probeMarkers show that the probe kernel ran far: any one confirms the
// accelerator.
var probeMarkers = []string{"Run /init as init process", "Kernel panic", "VFS: "}

// accelVerdict is one cached probe result.
type accelVerdict struct {
	Accel  Accel     `json:"accel"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// probeKey names a probe result: the same QEMU on the same host kernel
// for the same guest arch gets the same answer.
func probeKey(bin, version, arch string) string {
	h := sha256.Sum256([]byte(strings.Join([]string{bin, version, hostRelease(), arch}, "\x00")))
	return hex.EncodeToString(h[:8])
}

func accelCachePath() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "qmount", "accel.json"), nil
}

func readAccelCache() map[string]accelVerdict {
	m := map[string]accelVerdict{}
	p, err := accelCachePath()
	if err != nil {
		return m
	}
	if b, err := os.ReadFile(p); err == nil {
		_ = json.Unmarshal(b, &m)
	}
	return m
}

func writeAccelCache(key string, v accelVerdict) error {
	p, err := accelCachePath()
	if err != nil {
		return err
	}
	m := readAccelCache()
	m[key] = v
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".accel-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), p)
}

// probeAccel boots kernel (and initrd) under accel with a console on a
// pipe and reports whether the kernel got far within timeout.
func probeAccel(ctx context.Context, timeout time.Duration, bin, arch, machine string, accel Accel, kernel, initrd string) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	appendLine := "console=ttyS0 earlyprintk=ttyS0 reboot=t panic=-1"
	mopt := machine
	if machine == MachineMicrovm {
		mopt += ",x-option-roms=off,rtc=on"
	}
	if arch == "arm64" {
		appendLine = "console=ttyAMA0 earlycon panic=-1"
	} else if khz := hostTSCKHz(); khz > 0 && runtime.GOARCH == "amd64" {
		appendLine += " tsc_early_khz=" + strconv.FormatInt(khz, 10)
	}
	cpu := "host"
	switch {
	case accel != AccelTCG:
	case arch == "arm64":
		cpu = "cortex-a57"
	default:
		cpu = "max"
	}
	args := []string{"-M", mopt, "-accel", string(accel), "-cpu", cpu, "-smp", "1", "-m", "256",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-kernel", kernel, "-append", appendLine,
		"-chardev", "stdio,id=con,signal=off", "-serial", "chardev:con"}
	if initrd != "" {
		args = append(args, "-initrd", initrd)
	}
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return false, err.Error()
	}
	if err := cmd.Start(); err != nil {
		return false, err.Error()
	}
	found := make(chan bool, 1)
	go func() {
		var seen []byte
		buf := make([]byte, 4096)
		for {
			n, err := out.Read(buf)
			seen = append(seen, buf[:n]...)
			for _, m := range probeMarkers {
				if bytes.Contains(seen, []byte(m)) {
					found <- true
					io.Copy(io.Discard, out)
					return
				}
			}
			if len(seen) > 1<<20 {
				seen = seen[len(seen)-4096:]
			}
			if err != nil {
				found <- false
				return
			}
		}
	}()
	var ok bool
	select {
	case ok = <-found:
	case <-ctx.Done():
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	_ = cmd.Wait()
	if ok {
		return true, fmt.Sprintf("a %s guest kernel booted under %s", arch, accel)
	}
	why := strings.TrimSpace(stderr.String())
	if why == "" {
		why = fmt.Sprintf("no boot progress within %v", timeout)
	}
	return false, fmt.Sprintf("the guest kernel did not boot under %s: %s", accel, why)
}
