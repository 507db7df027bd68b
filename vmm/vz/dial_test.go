package vz

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// unixConnect dials a real unix socket, standing in for the framework's
// vsock Connect: it fails while nobody listens, as Connect does while the
// guest boots.
func unixConnect(path string, calls *atomic.Int32) func() (net.Conn, error) {
	return func() (net.Conn, error) {
		calls.Add(1)
		return net.Dial("unix", path)
	}
}

// The guest starts listening after a few failed attempts: Dial gets
// through and the stream works both ways.
func TestDialRetryUntilListening(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vsock")
	var calls atomic.Int32
	connect := unixConnect(path, &calls)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for calls.Load() < 3 {
			time.Sleep(time.Millisecond)
		}
		l, err := net.Listen("unix", path)
		if err != nil {
			t.Error(err)
			return
		}
		defer l.Close()
		c, err := l.Accept()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Error(err)
			return
		}
		c.Write(append(buf, '!'))
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := dialRetry(ctx, make(chan struct{}), connect)
	if err != nil {
		t.Fatalf("dialRetry: %v", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "ping!" {
		t.Fatalf("read %q, %v; want ping!", got, err)
	}
	if n := calls.Load(); n < 4 {
		t.Errorf("%d connect calls, want at least 4 (3 refused, 1 accepted)", n)
	}
	wg.Wait()
}

// Nobody ever listens: Dial ends with ctx and says why it kept failing.
func TestDialRetryContextEnds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vsock")
	var calls atomic.Int32
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := dialRetry(ctx, make(chan struct{}), unixConnect(path, &calls))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want DeadlineExceeded", err)
	}
	if !strings.Contains(err.Error(), "no such file") {
		t.Errorf("err %q does not carry the last connect error", err)
	}
	if calls.Load() < 2 {
		t.Errorf("%d attempts, want retries", calls.Load())
	}
}

// The machine exits while Dial waits: Dial stops at once.
func TestDialRetryMachineExits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vsock")
	var calls atomic.Int32
	done := make(chan struct{})
	go func() {
		for calls.Load() < 2 {
			time.Sleep(time.Millisecond)
		}
		close(done)
	}()
	_, err := dialRetry(context.Background(), done, unixConnect(path, &calls))
	if !errors.Is(err, errMachineExited) {
		t.Fatalf("err %v, want errMachineExited", err)
	}
}

// An attempt that hangs (Connect waits for a completion handler that may
// never come) does not hold Dial past ctx, and the connection it brings
// later is closed rather than leaked.
func TestDialRetryAbandonedAttemptIsClosed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vsock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	release := make(chan struct{})
	connect := func() (net.Conn, error) {
		<-release
		return net.Dial("unix", path)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := dialRetry(ctx, make(chan struct{}), connect)
		errc <- err
	}()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want Canceled", err)
	}
	close(release) // the hung attempt completes now
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("server read %d, %v; want EOF (the late connection closed)", n, err)
	}
}
