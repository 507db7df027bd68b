package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qmount/qmount/internal/wire"
	"github.com/qmount/qmount/p9server"
)

// How long the guest waits for the host's control connection before it
// gives up and powers off.
const controlWait = 60 * time.Second

// Init runs the guest's PID 1: it mounts /proc, /sys, /dev and scratch
// tmpfs, logs to /dev/console, reaps zombies, loads the boot modules,
// waits for the host's control connection, runs the agent until shutdown
// and powers the VM off. It never returns: every path, a panic included,
// ends in power-off.
func Init() {
	start := BootTimeMS()
	console := setupBase()
	log := slog.New(NewConsoleHandler(console, slog.LevelInfo))
	defer func() {
		if r := recover(); r != nil {
			log.Error("panic", "value", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
		PowerOff(log)
	}()
	params := map[string]string{}
	if b, err := os.ReadFile("/proc/cmdline"); err == nil {
		params = wire.ParseCmdline(string(b))
	}
	if v := params[wire.ParamDebug]; v != "" && v != "0" {
		log = slog.New(NewConsoleHandler(console, slog.LevelDebug))
	}
	if err := runInit(log, console, start, params); err != nil {
		log.Error("init failed", "err", err)
	}
}

// setupBase mounts the base filesystems and opens the console (stdout and
// stderr included, so a crash is visible).
func setupBase() io.Writer {
	for _, m := range []struct{ src, dir, fstype string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
		{"tmpfs", "/run", "tmpfs"},
		{"tmpfs", "/tmp", "tmpfs"},
	} {
		os.MkdirAll(m.dir, 0o755)
		if err := unix.Mount(m.src, m.dir, m.fstype, unix.MS_NOSUID, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			fmt.Fprintf(os.Stderr, "%smounting %s: %v\n", ConsolePrefix, m.dir, err)
		}
	}
	raiseFileLimit()
	// A kernel panic (init dying included) reboots at once; the VM runs
	// with reboot=t / PSCI and QEMU -no-reboot, so the VM exits.
	os.WriteFile("/proc/sys/kernel/panic", []byte("-1\n"), 0o644)
	c, err := os.OpenFile("/dev/console", os.O_WRONLY|unix.O_NOCTTY, 0)
	if err != nil {
		return os.Stderr
	}
	unix.Dup3(int(c.Fd()), 1, 0)
	unix.Dup3(int(c.Fd()), 2, 0)
	return c
}

// raiseFileLimit lifts the open-file limit to the kernel's maximum: the
// 9P server holds a descriptor per fid, and the host keeps a fid for
// every file it has used whose inode its kernel still caches (tar -x of
// a few thousand files passes the default 4096).
func raiseFileLimit() {
	max := uint64(1 << 20)
	if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
		if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && v > 0 {
			max = v
		}
	}
	lim := unix.Rlimit{Cur: max, Max: max}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Fprintf(os.Stderr, "%sraising the open-file limit: %v\n", ConsolePrefix, err)
	}
}

func runInit(log *slog.Logger, console io.Writer, start int64, params map[string]string) error {
	go reap()
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGTERM, unix.SIGINT)
	defer stop()

	info, err := ReadGuestInfo(GuestInfoPath)
	if err != nil {
		log.Warn("no guest info", "err", err)
		info = &GuestInfo{}
	}
	release := linuxSystem{}.kernelRelease()
	tl := wire.Timeline{Init: start}
	var mods ModuleLoader
	if km, err := NewKernelModules(release); err != nil {
		log.Debug("no kernel modules", "err", err)
	} else {
		mods = km
		if boot := info.BootModuleList(""); len(boot) > 0 {
			if err := km.Load(ctx, boot...); err != nil {
				log.Warn("loading boot modules", "err", err)
			}
		}
		if extra := info.BootModuleList(params[wire.ParamModules]); len(extra) > len(info.BootModuleList("")) {
			// Overlaps with the host's connection; a mount that needs
			// these waits for them in Load.
			go func() {
				if err := km.Load(ctx, extra...); err != nil {
					log.Warn("loading modules from the command line", "err", err)
				}
			}()
		}
	}
	tl.Modules = BootTimeMS()
	log.Info("started", "kernel", release, "arch", runtime.GOARCH, "init_ms", tl.Init, "modules_ms", tl.Modules)

	ctl, err := ConnectControl(ctx, log, HelloMessage(release), controlWait)
	if err != nil {
		return err
	}
	tl.Connected = BootTimeMS()
	log.Info("control connected", "via", ctl.Via, "ms", tl.Connected)
	nl, err := NinePListener()
	if err != nil {
		ctl.Conn.Close()
		return err
	}
	a, err := New(Config{
		MountDir: DefaultMountDir,
		Disks:    SysfsDisks{SysRoot: sysRoot, DevRoot: devRoot},
		NineP:    nl,
	}, WithLogger(log), WithModules(mods, info), WithTimeline(tl), WithKernel(release),
		// The 9P library's per-message trace (at debug) is far too slow.
		WithServerOptions(p9server.WithLogger(slog.New(NewConsoleHandler(console, slog.LevelInfo)))))
	if err != nil {
		nl.Close()
		ctl.Conn.Close()
		return err
	}
	serve := a.Serve
	if ctl.HelloSent {
		serve = a.ServeAfterHello
	}
	end, err := serve(ctx, ctl.Conn)
	log.Info("session ended", "why", string(end))
	return err
}

// PowerOff syncs and stops the VM: on amd64 a reboot, which makes QEMU
// (-no-reboot, kernel reboot=t) exit, as microvm has no ACPI power-off; on
// arm64 a PSCI power-off. It does not return.
func PowerOff(log *slog.Logger) {
	unix.Sync()
	cmd := unix.LINUX_REBOOT_CMD_POWER_OFF
	if runtime.GOARCH == "amd64" || runtime.GOARCH == "386" {
		cmd = unix.LINUX_REBOOT_CMD_RESTART
	}
	log.Info("powering off")
	for {
		if err := unix.Reboot(cmd); err != nil {
			log.Error("power off", "err", err)
		}
		time.Sleep(time.Second)
	}
}
