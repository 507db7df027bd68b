package qemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qmount/qmount/vmm"
)

func init() { vmm.Register(New()) }

// StderrFile is the name of QEMU's stderr (and stdout) log in the state dir.
const StderrFile = "qemu.stderr"

// startTimeout bounds Start when ctx has no deadline of its own.
const startTimeout = 30 * time.Second

// Option adjusts a Driver.
type Option func(*Driver)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(d *Driver) {
		if l != nil {
			d.log = l
		}
	}
}

// WithBinary runs this QEMU binary instead of the one on $PATH.
func WithBinary(path string) Option { return func(d *Driver) { d.binary = path } }

// WithAccel forces an accelerator (no selection, no probe). The
// QMOUNT_ACCEL environment variable does the same for users.
func WithAccel(a Accel) Option { return func(d *Driver) { d.accel = a } }

// WithTransport forces a transport (default: vsock when
// /dev/vhost-vsock is usable, virtio-serial otherwise).
func WithTransport(t Transport) Option { return func(d *Driver) { d.transport = t } }

// WithMachine forces a QEMU machine type (microvm, q35, virt).
func WithMachine(m string) Option { return func(d *Driver) { d.machine = m } }

// WithDebug keeps the guest kernel's console verbose.
func WithDebug(on bool) Option { return func(d *Driver) { d.debug = on } }

// WithUnsafeCache makes QEMU ignore the guest's disk flushes
// (cache=unsafe). Data is lost if the host crashes: benchmarks only.
func WithUnsafeCache() Option { return func(d *Driver) { d.unsafeCache = true } }

// WithPdeathsig sets whether QEMU gets SIGKILL when the process that
// started it dies (PR_SET_PDEATHSIG; default on). Go delivers it when the
// starting OS thread exits, which only happens for goroutines that lock
// their thread and return without unlocking.
func WithPdeathsig(on bool) Option { return func(d *Driver) { d.pdeathsig = on } }

// Driver runs guests with QEMU. It is safe for concurrent use.
type Driver struct {
	log         *slog.Logger
	binary      string
	accel       Accel
	transport   Transport
	machine     string
	debug       bool
	unsafeCache bool
	pdeathsig   bool

	mu     sync.Mutex
	infos  map[string]*qemuInfo // by binary
	accels map[string]Accel     // verdicts of this process, by probe key
}

var _ vmm.Driver = (*Driver)(nil)

// New returns a QEMU driver.
func New(opts ...Option) *Driver {
	d := &Driver{
		log:       slog.New(slog.DiscardHandler),
		pdeathsig: true,
		infos:     map[string]*qemuInfo{},
		accels:    map[string]Accel{},
	}
	for _, o := range opts {
		o(d)
	}
	return d
}

// Name implements vmm.Driver.
func (d *Driver) Name() string { return "qemu" }

// Start implements vmm.Driver. The caller owns cfg.StateDir (it must
// exist); the driver creates its sockets there and removes them when the
// machine exits, and leaves qemu.stderr (and console.log, when
// cfg.ConsoleLog is empty) for the caller to read or remove.
func (d *Driver) Start(ctx context.Context, cfg vmm.Config) (vmm.Machine, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}
	if cfg.Arch == "" {
		cfg.Arch = runtime.GOARCH
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("starting qemu: %w", err)
	}
	for _, f := range []struct{ what, path string }{{"kernel", cfg.Kernel}, {"initrd", cfg.Initrd}} {
		if _, err := os.Stat(f.path); err != nil {
			return nil, fmt.Errorf("starting qemu: guest %s: %w", f.what, err)
		}
	}
	if st, err := os.Stat(cfg.StateDir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("starting qemu: state dir %q must be an existing directory", cfg.StateDir)
	}
	plan, err := d.plan(ctx, &cfg)
	if err != nil {
		return nil, fmt.Errorf("starting qemu: %w", err)
	}
	files, closeFiles, err := diskFiles(cfg.Disks)
	if err != nil {
		return nil, fmt.Errorf("starting qemu: %w", err)
	}
	defer closeFiles()
	cfg.Disks = append([]vmm.Disk(nil), cfg.Disks...) // the caller's stays as it is
	for i := range cfg.Disks {
		cfg.Disks[i].File = files[i]
	}

	for attempt := 0; ; attempt++ {
		if plan.Transport == TransportVsock {
			plan.CID = 3 + rand.Uint32N(1<<30)
		}
		inv, err := BuildArgv(&cfg, plan)
		if err != nil {
			return nil, fmt.Errorf("starting qemu: %w", err)
		}
		m, err := d.launch(ctx, &cfg, plan, inv)
		if err != nil && plan.Transport == TransportVsock && attempt < 8 && errors.Is(err, errCIDInUse) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("starting qemu: %w", err)
		}
		return m, nil
	}
}

// plan resolves the host facts for cfg.
func (d *Driver) plan(ctx context.Context, cfg *vmm.Config) (Plan, error) {
	p := Plan{
		Binary:      d.binary,
		Machine:     d.machine,
		Accel:       d.accel,
		Transport:   d.transport,
		Debug:       d.debug,
		UnsafeCache: d.unsafeCache,
		FirstFD:     3,
	}
	if p.Binary == "" {
		b, err := findBinary(cfg.Arch)
		if err != nil {
			return p, err
		}
		p.Binary = b
	}
	info, err := d.info(ctx, p.Binary)
	if err != nil {
		return p, err
	}
	if p.Machine == "" {
		p.Machine = DefaultMachine(cfg.Arch)
		if p.Machine == MachineMicrovm && !info.machines[MachineMicrovm] {
			p.Machine = MachineQ35
		}
	}
	if !info.machines[p.Machine] {
		return p, fmt.Errorf("%s has no machine type %q", p.Binary, p.Machine)
	}
	if p.Accel == "" {
		a, err := d.chooseAccel(ctx, cfg, p, info)
		if err != nil {
			return p, err
		}
		p.Accel = a
	}
	if p.Transport == "" {
		p.Transport = TransportSerial
		if vsockUsable() {
			p.Transport = TransportVsock
		}
	}
	if cfg.Arch == "amd64" && runtime.GOARCH == "amd64" {
		p.TSCKHz = hostTSCKHz()
	}
	return p, nil
}

func (d *Driver) info(ctx context.Context, bin string) (*qemuInfo, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if i, ok := d.infos[bin]; ok {
		return i, nil
	}
	i, err := describeBinary(ctx, bin)
	if err != nil {
		return nil, err
	}
	d.infos[bin] = i
	return i, nil
}

// chooseAccel decides from host facts and, where KVM may work, confirms it
// with a short probe boot whose verdict is cached on disk.
func (d *Driver) chooseAccel(ctx context.Context, cfg *vmm.Config, p Plan, info *qemuInfo) (Accel, error) {
	c, err := ChooseAccel(gatherFacts(cfg.Arch))
	if err != nil {
		return "", err
	}
	if !c.Probe {
		d.log.Debug("qemu accelerator", "accel", c.Accel, "reason", c.Reason)
		return c.Accel, nil
	}
	key := probeKey(p.Binary, info.version, cfg.Arch)
	d.mu.Lock()
	a, ok := d.accels[key]
	d.mu.Unlock()
	if ok {
		return a, nil
	}
	if v, ok := readAccelCache()[key]; ok {
		d.log.Debug("qemu accelerator (cached)", "accel", v.Accel, "reason", v.Reason)
		d.remember(key, v.Accel)
		return v.Accel, nil
	}
	works, why := probeAccel(ctx, probeTimeout, p.Binary, cfg.Arch, p.Machine, c.Accel, cfg.Kernel, cfg.Initrd)
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("probing %s: %w", c.Accel, err)
	}
	v := accelVerdict{Accel: AccelTCG, Reason: why, At: time.Now()}
	if works {
		v.Accel = c.Accel
	}
	d.log.Info("qemu accelerator probed", "accel", v.Accel, "reason", why)
	if err := writeAccelCache(key, v); err != nil {
		d.log.Warn("caching accelerator verdict", "err", err)
	}
	d.remember(key, v.Accel)
	return v.Accel, nil
}

func (d *Driver) remember(key string, a Accel) {
	d.mu.Lock()
	d.accels[key] = a
	d.mu.Unlock()
}

var errCIDInUse = errors.New("guest cid in use")

// launch starts QEMU for inv and waits until its QMP monitor answers, which
// QEMU does once the machine is built and running.
func (d *Driver) launch(ctx context.Context, cfg *vmm.Config, plan Plan, inv *Invocation) (*machine, error) {
	stderrPath := filepath.Join(cfg.StateDir, StderrFile)
	stderr, err := os.OpenFile(stderrPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating qemu log: %w", err)
	}
	defer stderr.Close()
	for _, s := range socketsOf(inv) {
		_ = os.Remove(s) // stale, from a machine that was killed
	}
	cmd := exec.Command(inv.Argv[0], inv.Argv[1:]...)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	cmd.ExtraFiles = inv.ExtraFiles
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if d.pdeathsig {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	d.log.Debug("starting qemu", "argv", strings.Join(inv.Argv, " "))
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("running %s: %w", inv.Argv[0], err)
	}
	console := cfg.ConsoleLog
	if console == "" {
		console = filepath.Join(cfg.StateDir, "console.log")
	}
	m := &machine{
		log:        d.log,
		cmd:        cmd,
		inv:        inv,
		plan:       plan,
		console:    console,
		stderrPath: stderrPath,
		started:    time.Now(),
		dialled:    map[string]bool{},
		done:       make(chan struct{}),
	}
	go m.reap()

	q, err := m.connectQMP(ctx)
	if err != nil {
		_ = m.Kill()
		<-m.done
		msg := m.stderrTail()
		if plan.Transport == TransportVsock && cidInUse(msg) {
			return nil, fmt.Errorf("%w: %s", errCIDInUse, msg)
		}
		if msg != "" && !strings.Contains(err.Error(), msg) {
			return nil, fmt.Errorf("%w; qemu said: %s", err, msg)
		}
		return nil, err
	}
	m.mu.Lock()
	m.qmp = q
	m.mu.Unlock()
	d.log.Debug("qemu running", "pid", cmd.Process.Pid, "accel", plan.Accel, "machine", plan.Machine,
		"transport", plan.Transport, "after", time.Since(m.started))
	return m, nil
}

// diskFiles returns, per disk, the file to pass to QEMU (nil for path
// disks) with the access mode QEMU will ask for: QEMU only takes an fd from
// an fd set if its O_ACCMODE matches the open it wants, so a read-only
// disk given a read-write file gets a read-only reopen of it.
func diskFiles(disks []vmm.Disk) ([]*os.File, func(), error) {
	files := make([]*os.File, len(disks))
	var opened []*os.File
	closeAll := func() {
		for _, f := range opened {
			f.Close()
		}
	}
	for i, d := range disks {
		if d.File == nil {
			continue
		}
		fl, err := unix.FcntlInt(d.File.Fd(), unix.F_GETFL, 0)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("disk %d: reading file flags: %w", i, err)
		}
		mode := fl & unix.O_ACCMODE
		switch {
		case d.ReadOnly && mode != unix.O_RDONLY:
			f, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(d.File.Fd())), os.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				closeAll()
				return nil, nil, fmt.Errorf("disk %d: reopening read-only: %w", i, err)
			}
			opened = append(opened, f)
			files[i] = f
		case !d.ReadOnly && mode != unix.O_RDWR:
			closeAll()
			return nil, nil, fmt.Errorf("disk %d: read-write disk given a file not opened read-write", i)
		default:
			files[i] = d.File
		}
	}
	return files, closeAll, nil
}

func socketsOf(inv *Invocation) []string {
	s := []string{inv.QMP}
	for _, p := range inv.Sockets {
		s = append(s, p)
	}
	return s
}
