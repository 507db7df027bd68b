package agent

import (
	"errors"
	"io"
	"net"
	"path/filepath"
	"slices"
	"testing"
)

func TestMultiListener(t *testing.T) {
	dir := t.TempDir()
	var ls []net.Listener
	var paths []string
	for _, n := range []string{"a.sock", "b.sock"} {
		p := filepath.Join(dir, n)
		l, err := net.Listen("unix", p)
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		paths = append(paths, p)
	}
	ml, err := MultiListener(ls...)
	if err != nil {
		t.Fatal(err)
	}
	// One connection on each: both arrive through the merged listener.
	var got []string
	for _, p := range paths {
		c, err := net.Dial("unix", p)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte(filepath.Base(p))); err != nil {
			t.Fatal(err)
		}
		sc, err := ml.Accept()
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 6)
		if _, err := io.ReadFull(sc, b); err != nil {
			t.Fatal(err)
		}
		got = append(got, string(b))
		sc.Close()
	}
	if !slices.Equal(got, []string{"a.sock", "b.sock"}) {
		t.Errorf("got %v", got)
	}
	done := make(chan error)
	go func() { _, err := ml.Accept(); done <- err }()
	if err := ml.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v", err)
	}
	// Closing closed the listeners under it.
	if _, err := net.Dial("unix", paths[0]); err == nil {
		t.Error("sub-listener still accepts after Close")
	}
	if _, err := MultiListener(); err == nil {
		t.Error("no listeners: no error")
	}
}
