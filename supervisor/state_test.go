package supervisor

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestStateListFindStale(t *testing.T) {
	l := Layout{Root: t.TempDir()}
	live, err := l.create()
	if err != nil {
		t.Fatal(err)
	}
	live.Mountpoint = "/mnt/live"
	live.Disks = []string{"/img/live.img"}
	live.SupervisorPID = os.Getpid()
	live.State = StateMounted
	if err := live.write(); err != nil {
		t.Fatal(err)
	}

	// A supervisor that has exited: its state is stale.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead, err := l.create()
	if err != nil {
		t.Fatal(err)
	}
	dead.Mountpoint = "/mnt/dead"
	dead.Disks = []string{"/img/dead.img"}
	dead.SupervisorPID = cmd.Process.Pid
	dead.State = StateMounted
	dead.Since = live.Since.Add(time.Second)
	if err := dead.write(); err != nil {
		t.Fatal(err)
	}

	all, err := l.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].ID != live.ID || all[1].ID != dead.ID {
		t.Fatalf("List = %+v", all)
	}
	if all[0].State != StateMounted || all[1].State != StateStale {
		t.Errorf("states = %s, %s; want mounted, stale", all[0].State, all[1].State)
	}
	for arg, want := range map[string]string{"/mnt/live": live.ID, "/img/dead.img": dead.ID, dead.ID: dead.ID} {
		st, err := l.Find(arg)
		if err != nil || st.ID != want {
			t.Errorf("Find(%q) = %v, %v; want %s", arg, st, err, want)
		}
	}
	if _, err := l.Find("/mnt/none"); err == nil {
		t.Error("Find of an unknown mount point succeeded")
	}

	// JSON field names are stable.
	b, _ := json.Marshal(all[0])
	var m map[string]any
	json.Unmarshal(b, &m)
	for _, k := range []string{"mountpoint", "disks", "fstype", "guest", "read_only", "supervisor_pid", "vm_pid", "state", "since"} {
		if _, ok := m[k]; !ok {
			t.Errorf("state JSON lacks %q: %s", k, b)
		}
	}

	// Stop cleans the stale one.
	if err := l.Stop(context.Background(), all[1], true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dead.Dir); !os.IsNotExist(err) {
		t.Errorf("stale state left: %v", err)
	}
}

func TestControlSocket(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "ctl.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	unmounted := make(chan struct{})
	go serveControl(ln, &wg, func() *State { return &State{ID: "x", State: StateMounted} },
		func() error { close(unmounted); return nil })
	defer ln.Close()
	ctx := context.Background()
	resp, err := call(ctx, sock, request{Op: opStatus})
	if err != nil || resp.State == nil || resp.State.ID != "x" {
		t.Fatalf("status: %+v, %v", resp, err)
	}
	if _, err := call(ctx, sock, request{Op: opUnmount}); err != nil {
		t.Fatalf("unmount: %v", err)
	}
	<-unmounted
	if _, err := call(ctx, sock, request{Op: "bogus"}); err == nil {
		t.Error("unknown request succeeded")
	}
}
