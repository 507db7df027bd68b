package vz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"

	"github.com/Code-Hex/vz/v3"

	"github.com/qmount/qmount/internal/wire"
	"github.com/qmount/qmount/vmm"
)

// machine is a running Virtualization.framework VM. vz dispatches every
// call on the VM's own serial queue (each VirtualMachine has one; the
// library passes it to the framework), so the methods here may be called
// from any goroutine.
type machine struct {
	vm    *vz.VirtualMachine
	sock  *vz.VirtioSocketDevice
	files []*os.File // console and disks the driver opened
	log   *slog.Logger

	done    chan struct{} // closed when the VM has stopped and files are closed
	exitErr error         // valid after done

	stopOnce sync.Once
}

var _ vmm.Machine = (*machine)(nil)

func newMachine(vm *vz.VirtualMachine, sock *vz.VirtioSocketDevice, files []*os.File, log *slog.Logger) *machine {
	return &machine{vm: vm, sock: sock, files: files, log: log, done: make(chan struct{})}
}

// start boots the VM and watches its state. On error nothing runs, and
// the machine's files are closed once the framework is done with them
// (never under a VM that may still use the descriptors).
func (m *machine) start(ctx context.Context) error {
	started := make(chan error, 1)
	go func() { started <- m.vm.Start() }()
	select {
	case err := <-started:
		if err != nil {
			closeAll(m.files)
			return err
		}
	case <-ctx.Done():
		// Start takes no context: let it finish, then stop what it started.
		go func() {
			if <-started == nil {
				if err := m.stopNow(); err != nil {
					m.log.Warn("stopping a vm whose start was cancelled", "err", err)
					return // it may still run: keep its files open
				}
			}
			closeAll(m.files)
		}()
		return ctx.Err()
	}
	go m.watch()
	return nil
}

// watch waits for the VM to reach a final state. The state notifications
// are buffered by vz from creation on (Starting, Running...), so none is
// lost between Start and this loop.
func (m *machine) watch() {
	var err error
	for st := range m.vm.StateChangedNotify() {
		m.log.Debug("vm state", "state", st)
		if st == vz.VirtualMachineStateStopped {
			break
		}
		if st == vz.VirtualMachineStateError {
			// vz v3.7.1 does not pass on the framework's NSError
			// (virtualMachine:didStopWithError: has no Go side).
			err = errors.New("virtual machine stopped with an internal error (see the console log)")
			break
		}
	}
	if cerr := closeAll(m.files); cerr != nil {
		m.log.Debug("closing vm files", "err", cerr)
	}
	m.exitErr = err
	close(m.done)
}

// Dial implements vmm.Machine over vsock: it connects to the guest's
// listener on port.Vsock, retrying while the guest boots, until ctx ends.
func (m *machine) Dial(ctx context.Context, port wire.Port) (net.Conn, error) {
	if port.Vsock == 0 {
		return nil, fmt.Errorf("dialing %s: no vsock port", port.Name)
	}
	c, err := dialRetry(ctx, m.done, func() (net.Conn, error) {
		conn, err := m.sock.Connect(port.Vsock)
		if err != nil {
			return nil, err
		}
		return conn, nil // not a typed nil in an interface
	})
	if err != nil {
		return nil, fmt.Errorf("dialing %s (vsock %d): %w", port.Name, port.Vsock, err)
	}
	return c, nil
}

// Wait implements vmm.Machine.
func (m *machine) Wait(ctx context.Context) error {
	select {
	case <-m.done:
		return m.exitErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown implements vmm.Machine. It asks the guest to stop (on arm64
// Linux the framework's request is a power-button event that a minimal
// guest may ignore; qmount's guest powers off through PSCI after the
// control channel's shutdown, which ends the VM the same way) and stops
// the VM at ctx's end.
func (m *machine) Shutdown(ctx context.Context) error {
	select {
	case <-m.done:
		return m.exitErr
	default:
	}
	if m.vm.CanRequestStop() {
		if _, err := m.vm.RequestStop(); err != nil {
			m.log.Debug("request stop", "err", err)
		}
	}
	select {
	case <-m.done:
		return m.exitErr
	case <-ctx.Done():
	}
	m.log.Info("guest did not power off in time; stopping the vm")
	if err := m.stopNow(); err != nil {
		return errors.Join(fmt.Errorf("guest did not power off: %w", ctx.Err()), err)
	}
	<-m.done
	return fmt.Errorf("guest did not power off, vm stopped: %w", ctx.Err())
}

// Kill implements vmm.Machine.
func (m *machine) Kill() error {
	select {
	case <-m.done:
		return nil
	default:
	}
	if err := m.stopNow(); err != nil {
		return err
	}
	<-m.done
	return nil
}

// stopNow stops the VM at once (VZVirtualMachine stop, macOS 12+); it is
// done once, later callers get nil.
func (m *machine) stopNow() error {
	var err error
	m.stopOnce.Do(func() {
		if !m.vm.CanStop() {
			// Already stopping or stopped.
			return
		}
		if err = m.vm.Stop(); err != nil {
			err = fmt.Errorf("stopping the vm: %w", err)
		}
	})
	return err
}

// PID implements vmm.Machine: the VM runs inside this process.
func (m *machine) PID() int { return 0 }
