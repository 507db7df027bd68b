package client

import (
	"context"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qmount/qmount/p9server"
)

// env is a real FUSE mount of a directory served by p9server over a
// socket pair, in this process.
type env struct {
	t    testing.TB
	srv  *p9server.Server
	data string // the served directory
	mnt  string // the mount point
	m    *Mounted
	done chan error
}

func requireFUSE(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount FUSE file systems")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse (the fuse kernel module)")
	}
}

func socketPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), fmt.Sprintf("socketpair-%d", i))
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatalf("FileConn: %v", err)
		}
		conns[i] = c
	}
	return conns[0], conns[1]
}

// mountEnv serves a new temp dir (or data, if not empty) and mounts it.
func mountEnv(t testing.TB, data string, opts ...Option) *env {
	t.Helper()
	return mountEnvServer(t, data, nil, opts...)
}

// mountEnvServer is mountEnv with options for the server.
func mountEnvServer(t testing.TB, data string, sopts []p9server.Option, opts ...Option) *env {
	t.Helper()
	requireFUSE(t)
	if data == "" {
		data = t.TempDir()
	}
	e := &env{t: t, data: data, mnt: t.TempDir(), done: make(chan error, 1)}
	srv, err := p9server.New(data, sopts...)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	cc, sc := socketPair(t)
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(context.Background(), sc)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := Mount(ctx, cc, e.mnt, opts...)
	if err != nil {
		t.Fatal(err)
	}
	e.m = m
	go func() { e.done <- m.Wait() }()
	t.Cleanup(func() {
		e.unmount()
		<-served
		srv.Close()
	})
	return e
}

func (e *env) unmount() {
	if e.m == nil {
		return
	}
	if err := e.m.Unmount(); err != nil {
		e.t.Errorf("unmount: %v", err)
	}
	select {
	case <-e.done:
	case <-time.After(30 * time.Second):
		e.t.Errorf("Wait did not return after unmount")
	}
	e.m = nil
}

// requests is the number of 9P requests sent so far.
func (e *env) requests() uint64 { return e.m.Client().Stats().Total }

func (e *env) path(name string) string { return e.mnt + "/" + name }

// dropCaches makes the kernel forget cached dentries and inodes (FUSE
// FORGETs follow).
func dropCaches(t testing.TB) {
	t.Helper()
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0); err != nil {
		t.Skipf("cannot drop caches: %v", err)
	}
}
