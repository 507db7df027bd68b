package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"

	"github.com/qmount/qmount/p9server"
)

// socketFiles returns the two ends of a stream socketpair as files: the
// guest end stands in for a virtio port (a pollable stream file), the host
// end for the host's side of it.
func socketFiles(t *testing.T) (guest, host *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(fds[0]), "guest"), os.NewFile(uintptr(fds[1]), "host")
}

// TestPortListenerServes9P serves a real directory with p9server through a
// PortListener and reads a file with the p9 client from the other end.
func TestPortListenerServes9P(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f.txt"), []byte("over the port"), 0o644); err != nil {
		t.Fatal(err)
	}
	guest, host := socketFiles(t)
	l := NewPortListener(guest, "qmount.9p")
	if l.Addr().String() != "qmount.9p" {
		t.Errorf("Addr %v", l.Addr())
	}
	srv, err := p9server.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	accepted := make(chan net.Conn, 1)
	acceptErr := make(chan error, 2)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				acceptErr <- err
				return
			}
			accepted <- c
			// A plain wrapper, as the agent uses: no syscall.Conn.
			srv.Serve(context.Background(), &plainConn{rwc: c})
		}
	}()
	// Nothing was sent yet: no connection.
	select {
	case <-accepted:
		t.Fatal("Accept returned before the host sent anything")
	case <-time.After(50 * time.Millisecond):
	}

	c, err := p9.NewClient(host)
	if err != nil {
		t.Fatal(err)
	}
	<-accepted
	root, err := c.Attach("")
	if err != nil {
		t.Fatal(err)
	}
	_, f, err := root.Walk([]string{"f.txt"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.Open(p9.ReadOnly); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 64)
	n, err := f.ReadAt(b, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	if string(b[:n]) != "over the port" {
		t.Errorf("read %q", b[:n])
	}
	f.Close()
	root.Close()
	c.Close() // closes host: the port hangs up; Accept waits again

	select {
	case <-accepted:
		t.Fatal("Accept returned a connection while the host side is closed")
	case err := <-acceptErr:
		t.Fatalf("Accept failed while the host side is closed: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-acceptErr; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v", err)
	}
}
