package vz

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// errMachineExited is returned by Dial once the machine has stopped.
var errMachineExited = errors.New("virtual machine has exited")

// Retry pacing while the guest is not listening yet (it is still booting).
const (
	dialFirstBackoff = 10 * time.Millisecond
	dialMaxBackoff   = 250 * time.Millisecond
)

// dialRetry calls connect until it returns a connection, ctx ends or done
// is closed. Each attempt runs in its own goroutine: vz's
// VirtioSocketDevice.Connect waits for the framework's completion handler
// and takes no context (Apple documents that connecting to a port nobody
// listens on may "do nothing"), so an attempt can outlive ctx; a
// connection it brings after dialRetry gave up is closed.
func dialRetry(ctx context.Context, done <-chan struct{}, connect func() (net.Conn, error)) (net.Conn, error) {
	backoff := dialFirstBackoff
	var lastErr error
	for attempt := 1; ; attempt++ {
		ch := make(chan dialResult, 1)
		go func() {
			c, err := connect()
			ch <- dialResult{c, err}
		}()
		var r dialResult
		select {
		case r = <-ch:
		case <-ctx.Done():
			go closeLate(ch)
			return nil, dialError(ctx.Err(), attempt, lastErr)
		case <-done:
			go closeLate(ch)
			return nil, errMachineExited
		}
		if r.err == nil {
			return r.c, nil
		}
		lastErr = r.err
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, dialError(ctx.Err(), attempt, lastErr)
		case <-done:
			t.Stop()
			return nil, errMachineExited
		}
		backoff = min(2*backoff, dialMaxBackoff)
	}
}

type dialResult struct {
	c   net.Conn
	err error
}

// closeLate closes the connection an abandoned attempt brings, if any.
func closeLate(ch <-chan dialResult) {
	if r := <-ch; r.c != nil {
		r.c.Close()
	}
}

func dialError(ctxErr error, attempts int, last error) error {
	if last == nil {
		return fmt.Errorf("after %d attempts: %w", attempts, ctxErr)
	}
	return fmt.Errorf("after %d attempts (last: %v): %w", attempts, last, ctxErr)
}
