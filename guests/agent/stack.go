package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/qmount/qmount/internal/wire"
	"github.com/qmount/qmount/probe"
)

// MaxUnlockAttempts is how many passphrases the guest tries on one
// container before it gives up with wire.ErrWrongPassphrase.
const MaxUnlockAttempts = 3

// errNoPassphrase is the host declining to give a passphrase.
var errNoPassphrase = errors.New("no passphrase given")

// errWrongPassphrase is a container that no given passphrase opened.
var errWrongPassphrase = errors.New(wire.ErrWrongPassphrase)

// askFunc asks the host for the passphrase of device (a disk serial) on
// attempt n; it returns errNoPassphrase when the host has none.
type askFunc func(ctx context.Context, device, kind string, attempt int) (string, error)

// lvmConfig makes LVM work without udev and look only at block devices.
const lvmConfig = `devices { obtain_device_list_from_udev=0 scan_lvs=0 } activation { udev_sync=0 udev_rules=0 monitoring=0 } global { use_lvmpolld=0 }`

// stack is an assembled storage stack: what to undo at teardown, last
// layer first.
type stack struct {
	undo []func(ctx context.Context) error
}

func (st *stack) teardown(ctx context.Context) error {
	var errs []error
	for i := len(st.undo) - 1; i >= 0; i-- {
		if err := st.undo[i](ctx); err != nil {
			errs = append(errs, err)
		}
	}
	st.undo = nil
	return errors.Join(errs...)
}

// detectContent probes what dev holds from offset 0.
func detectContent(dev string) (*probe.Content, error) {
	f, err := os.Open(dev)
	if err != nil {
		return nil, fmt.Errorf("probing %s: %w", dev, err)
	}
	defer f.Close()
	size, err := f.Seek(0, 2)
	if err != nil {
		return nil, fmt.Errorf("probing %s: %w", dev, err)
	}
	c, err := probe.Detect(f, 0, size)
	if err != nil {
		return nil, fmt.Errorf("probing %s: %w", dev, err)
	}
	return c, nil
}

// containerKind names an encrypted container for a passphrase prompt and
// returns cryptsetup's --type for it; "" when c is not one.
func containerKind(c *probe.Content) (kind, cryptType string) {
	if c == nil {
		return "", ""
	}
	switch c.Type {
	case "crypto_LUKS":
		if c.LUKS != nil && c.LUKS.Version == 2 {
			return "LUKS2", "luks2"
		}
		return "LUKS1", "luks1"
	case "BitLocker":
		return "BitLocker", "bitlk"
	}
	return "", ""
}

// lvDevice is the device-mapper node of an LV: dashes in either name are
// doubled and the two are joined by one.
func lvDevice(vg, lv string) string {
	esc := func(s string) string { return strings.ReplaceAll(s, "-", "--") }
	return "/dev/mapper/" + esc(vg) + "-" + esc(lv)
}

// chooseLV picks the LV to mount from the VG metadata probe found: the
// requested one, or the only visible one.
func chooseLV(vg, want string, infos []*probe.LVMInfo) (string, error) {
	var names []string
	for _, in := range infos {
		if in == nil || in.VGName != vg {
			continue
		}
		for _, lv := range in.LVs {
			if lv.Visible && !slices.Contains(names, lv.Name) {
				names = append(names, lv.Name)
			}
		}
	}
	if want != "" {
		if len(names) > 0 && !slices.Contains(names, want) {
			return "", fmt.Errorf("volume group %s has no logical volume %s (it has: %s)", vg, want, strings.Join(names, ", "))
		}
		return want, nil
	}
	switch len(names) {
	case 0:
		return "", fmt.Errorf("volume group %s has no logical volume", vg)
	case 1:
		return names[0], nil
	}
	return "", fmt.Errorf("volume group %s has several logical volumes (%s): name one, as lvm:%s:DISK:LV", vg, strings.Join(names, ", "), vg)
}

// assemble opens the storage stack on devs (the disks of req, in order):
// unlocks encrypted containers, assembles md arrays and activates LVM. It
// returns the devices to mount (usually one; several for a multi-device
// btrfs) and what to undo.
func (a *Agent) assemble(ctx context.Context, req *wire.MountRequest, devs []string, ask askFunc) ([]string, *stack, error) {
	st := &stack{}
	fail := func(step string, err error) ([]string, *stack, error) {
		if terr := st.teardown(context.WithoutCancel(ctx)); terr != nil {
			a.log.Warn("undoing a partial storage stack", "err", terr)
		}
		return nil, nil, &stepError{step, err}
	}
	prepareStorageTools()
	a.loadStorageModules(ctx)
	contents := make([]*probe.Content, len(devs))
	for i, dev := range devs {
		c, err := detectContent(dev)
		if err != nil {
			return fail("detect", err)
		}
		kind, typ := containerKind(c)
		if kind == "" {
			contents[i] = c
			continue
		}
		name := "qmcrypt" + strconv.Itoa(i)
		serial := dev
		if i < len(req.Disks) {
			serial = req.Disks[i]
		}
		if err := a.unlock(ctx, dev, name, serial, kind, typ, req.ReadOnly, ask); err != nil {
			return fail(wire.StepUnlock, err)
		}
		st.undo = append(st.undo, func(ctx context.Context) error {
			_, err := runTool(ctx, nil, "cryptsetup", "close", name)
			return err
		})
		devs[i] = "/dev/mapper/" + name
		if c, err = detectContent(devs[i]); err != nil {
			return fail("detect", err)
		}
		contents[i] = c
	}

	// md: the members found (all disks for an explicit raid: request).
	var members []string
	for i, c := range contents {
		if req.RAID || (c != nil && c.Type == "linux_raid_member") {
			members = append(members, devs[i])
		}
	}
	if len(members) > 0 {
		md := "/dev/md/qmount"
		args := []string{"--assemble", "--run"}
		if req.ReadOnly {
			args = append(args, "--readonly")
		}
		args = append(args, md)
		args = append(args, members...)
		a.log.Info("assembling md array", "members", strings.Join(members, ","))
		if _, err := runTool(ctx, nil, "mdadm", args...); err != nil {
			return fail("raid", err)
		}
		st.undo = append(st.undo, func(ctx context.Context) error {
			_, err := runTool(ctx, nil, "mdadm", "--stop", md)
			return err
		})
		var rest []string
		for _, d := range devs {
			if !slices.Contains(members, d) {
				rest = append(rest, d)
			}
		}
		devs = append([]string{md}, rest...)
		c, err := detectContent(md)
		if err != nil {
			return fail("detect", err)
		}
		contents = []*probe.Content{c}
		for range rest {
			contents = append(contents, nil)
		}
	}

	// LVM: activate the VG named, or the one found on the PVs.
	vg := req.VG
	var infos []*probe.LVMInfo
	for _, c := range contents {
		if c != nil && c.Type == "LVM2_member" && c.LVM != nil {
			infos = append(infos, c.LVM)
			if vg == "" {
				vg = c.LVM.VGName
			}
		}
	}
	if vg == "" && len(infos) > 0 {
		return fail("lvm", errors.New("the LVM physical volume belongs to no volume group"))
	}
	if vg != "" {
		lv, err := chooseLV(vg, req.LV, infos)
		if err != nil {
			return fail("lvm", err)
		}
		cfg := lvmConfig
		if req.ReadOnly {
			// Activate every LV of the VG read-only (no metadata change).
			cfg = strings.Replace(cfg, "activation {", "activation { read_only_volume_list=["+strconv.Quote(vg)+"]", 1)
		}
		args := []string{"vgchange", "--config", cfg, "-ay", vg}
		a.log.Info("activating LVM volume group", "vg", vg, "lv", lv)
		if _, err := runTool(ctx, nil, "lvm", args...); err != nil {
			return fail("lvm", err)
		}
		st.undo = append(st.undo, func(ctx context.Context) error {
			_, err := runTool(ctx, nil, "lvm", "vgchange", "--config", cfg, "-an", vg)
			return err
		})
		dev := lvDevice(vg, lv)
		if err := waitForNode(ctx, dev); err != nil {
			return fail("lvm", err)
		}
		devs = []string{dev}
	}
	return devs, st, nil
}

// unlock opens the encrypted container dev as /dev/mapper/name, asking the
// host for passphrases. The passphrase goes to cryptsetup on stdin only.
func (a *Agent) unlock(ctx context.Context, dev, name, serial, kind, typ string, ro bool, ask askFunc) error {
	if ask == nil {
		return errNoPassphrase
	}
	args := []string{"open", "--type", typ, "--key-file=-", "--disable-external-tokens"}
	if ro {
		args = append(args, "--readonly")
	}
	if typ == "bitlk" {
		args = slices.DeleteFunc(args, func(s string) bool { return s == "--disable-external-tokens" })
	}
	args = append(args, dev, name)
	for attempt := 1; attempt <= MaxUnlockAttempts; attempt++ {
		pass, err := ask(ctx, serial, kind, attempt)
		if err != nil {
			return err
		}
		a.log.Info("unlocking", "device", serial, "kind", kind, "attempt", attempt)
		start := time.Now()
		_, err = runTool(ctx, strings.NewReader(pass), "cryptsetup", args...)
		if err == nil {
			a.log.Info("unlocked", "device", serial, "kind", kind, "took", time.Since(start).Round(time.Millisecond).String())
			return nil
		}
		var te *ToolError
		// cryptsetup exits 2 for "No key available with this passphrase".
		if errors.As(err, &te) && te.Code == 2 {
			a.log.Warn("wrong passphrase", "device", serial, "attempt", attempt)
			continue
		}
		return err
	}
	return errWrongPassphrase
}

// waitForNode waits briefly for a device node that a tool created.
func waitForNode(ctx context.Context, path string) error {
	for range 50 {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s did not appear", filepath.Base(path))
}

// prepareStorageTools makes the directories cryptsetup, LVM and mdadm
// expect and an lvm.conf for a guest without udev.
func prepareStorageTools() {
	for _, dir := range []string{"/run/cryptsetup", "/run/lock/lvm", "/run/lvm", "/run/mdadm", "/dev/mapper", "/etc/lvm"} {
		os.MkdirAll(dir, 0o755)
	}
	if _, err := os.Stat("/etc/lvm/lvm.conf"); err != nil {
		os.WriteFile("/etc/lvm/lvm.conf", []byte(strings.ReplaceAll(lvmConfig, "} ", "}\n")+"\n"), 0o644)
	}
}

// storageModules are the device-mapper, md and crypto modules the tools
// need; guests that lack some simply do not have them loaded.
var storageModules = []string{"dm_mod", "dm_crypt", "xts", "aesni_intel", "aes_generic", "cbc", "essiv",
	"sha256_generic", "af_alg", "algif_skcipher", "algif_hash", "md_mod", "raid0", "raid1", "raid10", "raid456"}

// loadStorageModules loads each storage module the guest has; a missing
// one is only logged (at debug), as a tool then says what it lacks.
func (a *Agent) loadStorageModules(ctx context.Context) {
	if a.modules == nil {
		return
	}
	for _, m := range storageModules {
		if err := a.modules.Load(ctx, m); err != nil {
			a.log.Debug("storage module not loaded", "module", m, "err", err)
		}
	}
}
