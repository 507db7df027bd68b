package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/qmount/qmount/internal/secret"
	"github.com/qmount/qmount/supervisor"
	"github.com/urfave/cli/v2"
)

func init() {
	commands = append(commands, &cli.Command{
		Name:      "mount",
		Usage:     "mount a disk or disk image (the default command)",
		ArgsUsage: "DISK[@PARTITION]|lvm:VG:DISK[:DISK...]:LV|raid:DISK:DISK[...]|DISK:DISK[...] [MOUNTPOINT]",
		Description: `Boots a small VM that mounts DISK with Linux's own driver and serves it at
MOUNTPOINT; returns once the mount is live (printing the mount point) or has
failed. Without MOUNTPOINT a directory named after the filesystem's label is
created (Linux: $XDG_RUNTIME_DIR/qmount/LABEL; macOS: /Volumes/LABEL).
DISK@N mounts partition N. lvm:VG:DISK[:DISK...]:LV mounts logical volume LV
of volume group VG over the disks; raid:DISK:DISK[...] a Linux RAID array
(degraded, read-only, when disks are missing); DISK:DISK[...] a filesystem
over several disks (btrfs). Encrypted disks (LUKS, BitLocker) are unlocked in
the guest: the passphrase comes from --key-file, $QMOUNT_PASSPHRASE (or
$QMOUNT_PASSPHRASE1, 2... per encrypted disk) or the terminal, and travels
only over the guest's control channel. The mount runs until "qmount unmount
MOUNTPOINT" or "umount MOUNTPOINT".`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "ro", Aliases: []string{"r", "read-only"}, Usage: "mount read-only (disk, guest and FUSE)"},
			&cli.StringFlag{Name: "options", Aliases: []string{"o"}, Usage: "mount options for the guest's mount, comma separated (e.g. subvol=@home,compress=zstd)"},
			&cli.StringFlag{Name: "type", Aliases: []string{"t"}, Usage: "filesystem type, overriding the detected one (e.g. ntfs3)"},
			&cli.StringFlag{Name: "guest", Usage: "guest to boot (default: linux)"},
			&cli.StringFlag{Name: "arch", Usage: "guest architecture (default: the host's)", Hidden: true},
			&cli.IntFlag{Name: "memory", Usage: "guest memory in MiB", Value: supervisor.DefaultMemoryMiB},
			&cli.IntFlag{Name: "cpus", Usage: "guest CPUs", DefaultText: fmt.Sprintf("%d, or the host's count if smaller", supervisor.DefaultCPUs)},
			&cli.StringFlag{Name: "owner", Usage: "file owners on the host: keep (the disk's uids) or me (yours)", Value: supervisor.DefaultOwnerMode},
			&cli.IntFlag{Name: "uid", Usage: "the uid files appear owned by (implies --owner=me)", Value: -1, DefaultText: "yours"},
			&cli.IntFlag{Name: "gid", Usage: "the gid files appear owned by (implies --owner=me)", Value: -1, DefaultText: "yours"},
			&cli.StringFlag{Name: "key-file", Usage: "read the passphrase of encrypted disks from `FILE` (else $QMOUNT_PASSPHRASE, $QMOUNT_PASSPHRASE1..N, or the terminal)"},
			&cli.BoolFlag{Name: "no-direct-read", Usage: "read file data through the guest even where qmount could read it from the disk itself"},
			&cli.BoolFlag{Name: "foreground", Aliases: []string{"f"}, Usage: "stay in the foreground until unmounted"},
			&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "log what happens to stderr"},
		},
		Action: mountAction,
	})
}

func mountAction(c *cli.Context) error {
	args := c.Args().Slice()
	switch {
	case len(args) == 0:
		return errors.New("no disk given: qmount mount DISK [MOUNTPOINT]")
	case len(args) > 2:
		return fmt.Errorf("too many arguments (%d): qmount mount DISK [MOUNTPOINT]", len(args))
	}
	req := supervisor.Request{
		Disk:      args[0],
		ReadOnly:  c.Bool("ro"),
		Options:   c.String("options"),
		FSType:    c.String("type"),
		Guest:     c.String("guest"),
		Arch:      c.String("arch"),
		MemoryMiB: c.Int("memory"),
		CPUs:      c.Int("cpus"),
		Owner:     supervisor.Owner{Mode: c.String("owner"), UID: c.Int("uid"), GID: c.Int("gid")},

		NoDirectRead: c.Bool("no-direct-read"),
	}
	if len(args) == 2 {
		req.Mountpoint = args[1]
	}
	if (c.IsSet("uid") || c.IsSet("gid")) && !c.IsSet("owner") {
		req.Owner.Mode = supervisor.OwnerMe
	}
	src := passphraseSource(c.String("key-file"))
	if kf := c.String("key-file"); kf != "" {
		if _, err := os.Stat(kf); err != nil {
			return fmt.Errorf("--key-file: %w", unwrapPath(err))
		}
	}
	plan, err := supervisor.Prepare(c.Context, req)
	if err != nil {
		return err
	}
	for _, n := range plan.Notes {
		fmt.Fprintln(os.Stderr, n)
	}
	prog := newProgress(os.Stderr, plan)
	if verbose(c) {
		prog.tty = false // log lines and a spinner do not mix
	}
	if c.Bool("foreground") {
		done := prog.start()
		defer func() { done() }()
		step := func(s string) {
			prog.step(s)
			if s == "ready" {
				done()
				fmt.Println(plan.Mountpoint)
			}
		}
		ask := func(ctx context.Context, disk, kind string, attempt int) (string, error) {
			done()
			defer func() { done = prog.start() }()
			return src.Passphrase(ctx, disk, kind, attempt)
		}
		return runSupervisor(c.Context, plan, verbose(c), step, nil, ask)
	}
	return startSupervisor(c.Context, plan, verbose(c), prog, src)
}

// passphraseSource returns the source of passphrases for encrypted
// disks. It takes $QMOUNT_PASSPHRASE* out of this process' environment,
// so that no process qmount starts (the supervisor, the hypervisor)
// inherits them.
func passphraseSource(keyFile string) *secret.Source {
	src := secret.New(keyFile)
	env := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, secret.EnvPassphrase) {
			env[k] = v
			os.Unsetenv(k)
		}
	}
	src.Getenv = func(k string) string { return env[k] }
	return src
}

// runSupervisor runs the mount in this process until it ends.
func runSupervisor(ctx context.Context, plan *supervisor.Plan, verbose bool, step func(string), onState func(*supervisor.State),
	ask func(ctx context.Context, disk, kind string, attempt int) (string, error)) error {
	drv, err := newDriver(slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	cfg := supervisor.Config{
		Driver:     drv,
		Mount:      mountFUSE,
		Progress:   step,
		OnState:    onState,
		Passphrase: ask,
	}
	if verbose {
		cfg.Logger = loggerTo(os.Stderr)
	}
	return supervisor.Run(ctx, plan, cfg)
}

// event is one line from the supervisor to the mount command that
// started it.
type event struct {
	Step  string    `json:"step,omitempty"`
	Log   string    `json:"log,omitempty"`
	Ready string    `json:"ready,omitempty"` // the mount point
	Error string    `json:"error,omitempty"`
	Ask   *askEvent `json:"ask,omitempty"` // a passphrase is needed: answer on fdPlan
}

// askEvent asks the mount command for a passphrase.
type askEvent struct {
	Disk    string `json:"disk"`
	Kind    string `json:"kind"`
	Attempt int    `json:"attempt"`
}

// answer is the mount command's reply to an askEvent: a passphrase, or
// why there is none. It travels only on the inherited pipe.
type answer struct {
	Passphrase string `json:"passphrase,omitempty"`
	Error      string `json:"error,omitempty"`
}

// The supervisor's inherited descriptors.
const (
	fdEvents = 3 // supervisor -> mount command: events
	// fdPlan carries the plan (one JSON value), then the answers to
	// passphrase requests (JSON lines), from the mount command to the
	// supervisor.
	fdPlan = 4
)

// startSupervisor re-executes qmount as the mount's supervisor in its own
// session and reports its progress until the mount is live or has failed.
func startSupervisor(ctx context.Context, plan *supervisor.Plan, verbose bool, prog *progress, src *secret.Source) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding the qmount binary: %w", err)
	}
	evR, evW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer evR.Close()
	planR, planW, err := os.Pipe()
	if err != nil {
		evW.Close()
		return err
	}
	args := []string{exe, superviseCommand}
	if verbose {
		args = append(args, "--verbose")
	}
	cmd := &exec.Cmd{
		Path:        exe,
		Args:        args,
		ExtraFiles:  []*os.File{evW, planR},
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
		// Stdin, Stdout, Stderr: /dev/null until the supervisor moves its
		// stderr to the mount's log.
	}
	err = cmd.Start()
	evW.Close()
	planR.Close()
	if err != nil {
		planW.Close()
		return fmt.Errorf("starting the supervisor: %w", err)
	}
	defer planW.Close()
	b, _ := json.Marshal(plan)
	_, werr := planW.Write(append(b, '\n'))
	if werr != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return fmt.Errorf("starting the supervisor: %w", werr)
	}

	// Ctrl-C while starting stops the mount.
	stop := context.AfterFunc(ctx, func() { cmd.Process.Signal(syscall.SIGTERM) })
	defer stop()

	done := prog.start()
	var logPath string
	sc := bufio.NewScanner(evR)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		var ev event
		if json.Unmarshal(sc.Bytes(), &ev) != nil {
			continue
		}
		switch {
		case ev.Log != "":
			logPath = ev.Log
			if verbose {
				prog.note("log: " + logPath)
			}
		case ev.Step != "":
			prog.step(ev.Step)
		case ev.Ask != nil:
			done()
			var a answer
			pass, err := src.Passphrase(ctx, ev.Ask.Disk, ev.Ask.Kind, ev.Ask.Attempt)
			if err != nil {
				a.Error = err.Error()
			} else {
				a.Passphrase = pass
			}
			b, _ := json.Marshal(&a)
			planW.Write(append(b, '\n'))
			done = prog.start()
		case ev.Ready != "":
			done()
			fmt.Println(ev.Ready)
			cmd.Process.Release()
			return nil
		case ev.Error != "":
			done()
			cmd.Wait() // the supervisor has cleaned up; reap it
			if ctx.Err() != nil {
				return errors.New("interrupted: nothing was mounted")
			}
			return errors.New(ev.Error)
		}
	}
	done()
	werr = cmd.Wait()
	msg := "the supervisor ended without a word"
	if werr != nil {
		msg = fmt.Sprintf("the supervisor failed (%v)", werr)
	}
	if logPath != "" {
		msg += ": see " + logPath
	}
	return errors.New(msg)
}

// superviseCommand is the hidden command the supervisor runs as.
const superviseCommand = "__supervise"

func init() {
	commands = append(commands, &cli.Command{
		Name:   superviseCommand,
		Hidden: true,
		Usage:  "run a mount's supervisor (started by qmount mount)",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}},
		},
		Action: superviseAction,
	})
}

func superviseAction(c *cli.Context) error {
	evW := os.NewFile(fdEvents, "events")
	planR := os.NewFile(fdPlan, "plan")
	if evW == nil || planR == nil {
		return errors.New("the supervisor is started by qmount mount")
	}
	defer planR.Close()
	dec := json.NewDecoder(io.LimitReader(planR, 4<<20))
	var plan supervisor.Plan
	if err := dec.Decode(&plan); err != nil {
		return fmt.Errorf("reading the mount plan: %w", err)
	}
	enc := json.NewEncoder(evW)
	var mu sync.Mutex
	send := func(ev event) {
		mu.Lock()
		defer mu.Unlock()
		if evW != nil {
			enc.Encode(ev)
		}
	}
	ready := false
	step := func(s string) {
		if s == "ready" {
			ready = true
			send(event{Ready: plan.Mountpoint}) // Run may have changed it
			mu.Lock()
			evW.Close()
			evW = nil
			mu.Unlock()
			planR.Close()
			return
		}
		send(event{Step: s})
	}
	// Passphrases come from the mount command, which asks the terminal or
	// takes them from its environment or key file.
	ask := func(ctx context.Context, disk, kind string, attempt int) (string, error) {
		send(event{Ask: &askEvent{Disk: disk, Kind: kind, Attempt: attempt}})
		stop := context.AfterFunc(ctx, func() { planR.SetReadDeadline(time.Now()) })
		defer stop()
		var a answer
		if err := dec.Decode(&a); err != nil {
			return "", fmt.Errorf("asking qmount mount for the passphrase: %w", err)
		}
		if a.Error != "" {
			return "", errors.New(a.Error)
		}
		return a.Passphrase, nil
	}
	onState := func(st *supervisor.State) {
		// From now on the supervisor's stderr (panics, runtime errors)
		// goes to the mount's log.
		if f, err := os.OpenFile(st.Log, os.O_WRONLY|os.O_APPEND, 0); err == nil {
			redirectStderr(f)
			f.Close()
		}
		send(event{Log: st.Log})
	}
	// SIGTERM and SIGINT cancel c.Context: the clean shutdown.
	err := runSupervisor(c.Context, &plan, false, step, onState, ask)
	if err != nil && !ready {
		send(event{Error: oneLine(err)})
		if evW != nil {
			evW.Close()
		}
		os.Exit(1)
	}
	if err != nil {
		os.Exit(1)
	}
	return nil
}

// progress shows the mount's progress on stderr: one updating line with a
// spinner on a terminal, plain lines otherwise.
type progress struct {
	w     *os.File
	tty   bool
	disk  string
	steps chan string
	notes chan string
	cur   string    // the step shown, kept across restarts
	t0    time.Time // when the display first started
}

func newProgress(w *os.File, plan *supervisor.Plan) *progress {
	disk := plan.Disk
	if plan.Partition > 0 {
		disk = fmt.Sprintf("%s@%d", plan.Disk, plan.Partition)
	}
	if len(plan.Disks) > 1 || plan.RAID || plan.VG != "" {
		disk = plan.Source
	}
	return &progress{w: w, tty: isTerminal(w.Fd()), disk: disk,
		steps: make(chan string, 16), notes: make(chan string, 16), cur: "starting"}
}

func (p *progress) text(step string) string {
	switch step {
	case "locking":
		return "checking " + p.disk
	case "booting":
		return "booting the guest VM"
	case "mounting":
		return "mounting " + p.disk
	}
	return step
}

// step reports a step ("ready" ends the display).
func (p *progress) step(s string) {
	if s == "ready" {
		return
	}
	if !p.tty {
		fmt.Fprintf(p.w, "%s...\n", p.text(s))
		return
	}
	select {
	case p.steps <- s:
	default:
	}
}

func (p *progress) note(s string) {
	if !p.tty {
		fmt.Fprintln(p.w, s)
		return
	}
	p.notes <- s
}

// start runs the spinner (on a terminal) until the returned func is
// called.
func (p *progress) start() (done func()) {
	if !p.tty {
		return func() {}
	}
	if p.t0.IsZero() {
		p.t0 = time.Now()
	}
	stop := make(chan struct{})
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		frames := []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}
		cur := p.cur
		defer func() { p.cur = cur }()
		t0 := p.t0
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			fmt.Fprintf(p.w, "\r\033[K%s %s (%.0fs)", frames[i%len(frames)], p.text(cur), time.Since(t0).Seconds())
			select {
			case s := <-p.steps:
				cur = s
			case n := <-p.notes:
				fmt.Fprintf(p.w, "\r\033[K%s\n", n)
			case <-tick.C:
			case <-stop:
				fmt.Fprint(p.w, "\r\033[K")
				return
			}
		}
	}()
	var once bool
	return func() {
		if !once {
			once = true
			close(stop)
			<-closed
		}
	}
}

// loggerTo is a debug-level text logger writing to w.
func loggerTo(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
