package client

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestForgetRace is the regression test for fids used after the kernel
// forgot their node: lookups, FORGETs (from drop_caches, racing with
// the operations) and new lookups of the same names run at the same
// time, and every operation must still reach the right file. It walks a
// tree, lstats another from several goroutines, then creates, writes
// and reads back files in new directories, checking each one through
// the mount and in the served directory.
func TestForgetRace(t *testing.T) {
	data := t.TempDir()
	const dirs, files = 20, 99
	for _, tree := range []string{"tree1", "tree2"} {
		for d := 0; d < dirs; d++ {
			dir := filepath.Join(data, tree, fmt.Sprintf("d%02d", d))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			makeFiles(t, dir, "f", files)
		}
	}
	if err := os.Mkdir(filepath.Join(data, "w"), 0o755); err != nil {
		t.Fatal(err)
	}
	e := mountEnv(t, data)
	base := e.srv.OpenFiles()

	// Drop the kernel's caches continuously while the rounds run, so
	// that FORGETs race with lookups of the same names.
	stop := make(chan struct{})
	var dropper sync.WaitGroup
	dropper.Add(1)
	go func() {
		defer dropper.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			unix.Sync()
			os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0)
		}
	}()
	var once sync.Once
	stopDropper := func() {
		once.Do(func() { close(stop) })
		dropper.Wait()
	}
	defer stopDropper()
	dropCaches(t)
	// Signal this process continuously: a signal reaching a thread
	// blocked in a FUSE request makes the kernel send FUSE_INTERRUPT,
	// so requests are cancelled and flushed mid-flight (Go retries the
	// interrupted system calls), as the Go runtime's preemption
	// signals do in any Go program using the mount.
	sigs := make(chan os.Signal, 64)
	signal.Notify(sigs, syscall.SIGUSR1)
	defer signal.Stop(sigs)
	dropper.Add(1)
	go func() {
		defer dropper.Done()
		for {
			select {
			case <-stop:
				return
			case <-sigs:
			case <-time.After(200 * time.Microsecond):
				syscall.Kill(os.Getpid(), syscall.SIGUSR1)
			}
		}
	}()

	rounds := 6
	if testing.Short() {
		rounds = 2
	}
	for r := 0; r < rounds; r++ {
		n := 0
		err := filepath.WalkDir(e.path("tree1"), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			n++
			return nil
		})
		if err != nil {
			t.Fatalf("round %d: walking tree1: %v", r, err)
		}
		if want := 1 + dirs + dirs*files; n != want {
			t.Fatalf("round %d: walked %d entries of tree1, want %d", r, n, want)
		}

		var wg sync.WaitGroup
		var failed atomic.Value
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				for d := g; d < dirs; d += 4 {
					for f := 0; f < files; f++ {
						p := e.path(fmt.Sprintf("tree2/d%02d/f%06d", d, f))
						var st unix.Stat_t
						if err := unix.Lstat(p, &st); err != nil {
							failed.CompareAndSwap(nil, fmt.Errorf("lstat %s: %w", p, err))
							return
						}
					}
				}
			}(g)
		}
		wg.Wait()
		if err, _ := failed.Load().(error); err != nil {
			t.Fatalf("round %d: %v", r, err)
		}

		// New directories and files, each written, read back through
		// the mount and checked in the served directory.
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				if err := writeAndCheck(e, data, fmt.Sprintf("w/r%d-%d", r, g)); err != nil {
					failed.CompareAndSwap(nil, err)
				}
			}(g)
		}
		wg.Wait()
		if err, _ := failed.Load().(error); err != nil {
			t.Fatalf("round %d: %v", r, err)
		}
	}
	stopDropper()

	dropCaches(t)
	deadline := time.Now().Add(10 * time.Second)
	for e.srv.OpenFiles() > base && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		dropCaches(t)
	}
	if got := e.srv.OpenFiles(); got > base {
		t.Errorf("server holds %d files after the rounds, %d before", got, base)
	}
}

// writeAndCheck makes directory rel with 20 files through the mount,
// each with content naming it, and checks them through the mount and in
// the served directory data.
func writeAndCheck(e *env, data, rel string) error {
	if err := os.Mkdir(e.path(rel), 0o755); err != nil {
		return fmt.Errorf("mkdir %s: %w", rel, err)
	}
	for i := 0; i < 20; i++ {
		name := fmt.Sprintf("%s/file%02d", rel, i)
		want := []byte("content of " + name + "\n")
		if err := os.WriteFile(e.path(name), want, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		got, err := os.ReadFile(e.path(name))
		if err != nil {
			return fmt.Errorf("read %s through the mount: %w", name, err)
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("read %s through the mount: %q, want %q", name, got, want)
		}
		got, err = os.ReadFile(filepath.Join(data, name))
		if err != nil {
			return fmt.Errorf("read %s in the served directory: %w", name, err)
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("%s in the served directory: %q, want %q", name, got, want)
		}
	}
	ents, err := os.ReadDir(filepath.Join(data, rel))
	if err != nil {
		return err
	}
	if len(ents) != 20 {
		return fmt.Errorf("%s holds %d entries in the served directory, want 20", rel, len(ents))
	}
	if _, err := os.Stat(e.path(rel + "/missing")); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("stat %s/missing: %v, want not-exist", rel, err)
	}
	return nil
}
