package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qmount/qmount/guests"
)

// runGuests runs `qmount guests args...` and returns its stdout.
func runGuests(t *testing.T, args ...string) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	done := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(r)
		done <- b
	}()
	err = newApp().Run(append([]string{"qmount", "guests"}, args...))
	os.Stdout = old
	w.Close()
	out := <-done
	if err != nil {
		t.Fatalf("qmount guests %v: %v", args, err)
	}
	return string(out)
}

// TestGuestsCommand lists the shipped guests, a user guest from --defs,
// and a real build of linux-6.12 (make guest GUEST=linux-6.12) found
// through $QMOUNT_GUESTS.
func TestGuestsCommand(t *testing.T) {
	built, err := filepath.Abs(filepath.Join("..", "..", "build", "guests", "linux-6.12", guests.HostArch()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := guests.Load(built); err != nil {
		t.Skipf("linux-6.12 not built (make guest GUEST=linux-6.12): %v", err)
	}
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "linux-6.12"), 0o755)
	if err := os.Symlink(built, filepath.Join(root, "linux-6.12", guests.HostArch())); err != nil {
		t.Fatal(err)
	}
	t.Setenv(guests.EnvDirs, root)
	defs := t.TempDir()
	os.MkdirAll(filepath.Join(defs, "mine"), 0o755)
	os.WriteFile(filepath.Join(defs, "mine", guests.DefFile), []byte(`{"name": "mine", "kernel": {"arm64": {"debian": "linux-image-arm64"}}, "filesystems": {"ext4": {"modules": ["ext4"]}}}`), 0o644)

	var list []guestListing
	if err := json.Unmarshal([]byte(runGuests(t, "--json", "--defs", defs)), &list); err != nil {
		t.Fatal(err)
	}
	byName := map[string]guestListing{}
	for _, g := range list {
		byName[g.Name] = g
	}
	if len(list) < 4 || !byName["linux"].Default || !byName["mini"].Shipped || byName["mine"].Shipped || byName["mine"].DefDir != filepath.Join(defs, "mine") {
		t.Fatalf("listing %+v", list)
	}
	var a *archListing
	for i, x := range byName["linux-6.12"].Arches {
		if x.Arch == guests.HostArch() {
			a = &byName["linux-6.12"].Arches[i]
		}
	}
	if a == nil || !a.Built || !strings.HasPrefix(a.Release, "6.12.") || a.KernelBytes == 0 || a.InitrdBytes == 0 || a.Modules == 0 ||
		len(a.Filesystems["ntfs"]) != 1 || a.Filesystems["ntfs"][0] != "ntfs3" || a.BuildHint != "" {
		t.Errorf("linux-6.12 %s: %+v", guests.HostArch(), a)
	}
	if m := byName["mini"].Arches[0]; m.Built || !strings.Contains(m.BuildHint, "GUEST=mini") || !strings.Contains(m.Kernel, "mini.config") {
		t.Errorf("mini: %+v", m)
	}

	table := runGuests(t, "--defs", defs)
	if !strings.Contains(table, "GUEST") || !strings.Contains(table, "ntfs(ntfs3)") || !strings.Contains(table, "mine") || !strings.Contains(table, a.Release) {
		t.Errorf("table:\n%s", table)
	}
	if !bytes.Contains([]byte(table), []byte("build linux: make guest GUEST=linux")) {
		t.Errorf("table does not say how to build the default guest:\n%s", table)
	}
}
