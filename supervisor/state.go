package supervisor

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Mount states, as State.State and `qmount status` show them.
const (
	StateStarting = "starting" // booting the guest, mounting
	StateMounted  = "mounted"  // serving the mount point
	StateStopping = "stopping" // clean shutdown under way
	StateStale    = "stale"    // the supervisor is gone; `qmount stop` cleans up
)

// State describes one mount. Its JSON field names are stable: `qmount
// status --json` prints a list of them.
type State struct {
	ID         string   `json:"id"`
	Mountpoint string   `json:"mountpoint"`
	Disks      []string `json:"disks"`
	Partition  int      `json:"partition,omitempty"`
	FSType     string   `json:"fstype"`
	Label      string   `json:"label,omitempty"`
	Options    string   `json:"options,omitempty"`
	Guest      string   `json:"guest"`
	ReadOnly   bool     `json:"read_only"`
	// SupervisorPID is the supervisor process; VMPID the hypervisor's
	// process (0 while booting or when it runs in-process).
	SupervisorPID int       `json:"supervisor_pid"`
	VMPID         int       `json:"vm_pid"`
	State         string    `json:"state"`
	Since         time.Time `json:"since"`
	// CreatedMountpoint is set when qmount created the mount point (and
	// removes it at the end).
	CreatedMountpoint bool `json:"created_mountpoint"`
	// LockKey names the disk lock the mount holds.
	LockKey string `json:"lock_key"`
	// LockKeys name the locks of the other disks of a multi-disk mount.
	LockKeys []string `json:"lock_keys,omitempty"`
	Socket   string   `json:"socket"`
	Log      string   `json:"log"`
	Console  string   `json:"console"`
	// Dir is the mount's directory in the state directory.
	Dir string `json:"dir"`
}

// Layout names the parts of a state directory.
type Layout struct{ Root string }

func (l Layout) mountsDir() string            { return filepath.Join(l.Root, "mounts") }
func (l Layout) logsDir() string              { return filepath.Join(l.Root, "logs") }
func (l Layout) locksDir() string             { return filepath.Join(l.Root, "locks") }
func (l Layout) mountDir(id string) string    { return filepath.Join(l.mountsDir(), id) }
func (l Layout) logPath(id string) string     { return filepath.Join(l.logsDir(), id+".log") }
func (l Layout) consolePath(id string) string { return filepath.Join(l.logsDir(), id+".console") }

// KeepLogs is how many mounts' logs are kept.
const KeepLogs = 20

// newID returns a short random mount id. Ids start with the time so that
// they sort by age.
func newID() string {
	var b [2]byte
	rand.Read(b[:])
	return fmt.Sprintf("%x-%s", time.Now().UnixMilli(), hex.EncodeToString(b[:]))
}

// create makes the directories of a new mount and returns its State.
func (l Layout) create() (*State, error) {
	for _, d := range []string{l.Root, l.mountsDir(), l.logsDir(), l.locksDir()} {
		if err := mkdirPrivate(d); err != nil {
			return nil, err
		}
	}
	id := newID()
	dir := l.mountDir(id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating mount state: %w", err)
	}
	l.pruneLogs()
	return &State{
		ID:      id,
		Dir:     dir,
		Socket:  filepath.Join(dir, "ctl.sock"),
		Log:     l.logPath(id),
		Console: l.consolePath(id),
		State:   StateStarting,
		Since:   time.Now().UTC().Truncate(time.Second),
	}, nil
}

// write saves st atomically.
func (st *State) write() error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding state: %w", err)
	}
	tmp := filepath.Join(st.Dir, ".state.json.tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("writing state: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(st.Dir, "state.json")); err != nil {
		return fmt.Errorf("writing state: %w", err)
	}
	return nil
}

// readState reads the State in a mount directory.
func readState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("reading %s: %w", dir, err)
	}
	st.Dir = dir
	return &st, nil
}

// List returns every mount in the state directory, oldest first, with
// State set to StateStale for mounts whose supervisor is gone. Mount
// directories without a state file yet (a supervisor starting) are
// skipped.
func (l Layout) List() ([]*State, error) {
	ents, err := os.ReadDir(l.mountsDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing mounts: %w", err)
	}
	var out []*State
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		st, err := readState(filepath.Join(l.mountsDir(), e.Name()))
		if err != nil {
			continue
		}
		if !processAlive(st.SupervisorPID) {
			st.State = StateStale
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Since.Equal(out[j].Since) {
			return out[i].Since.Before(out[j].Since)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// Find returns the mount whose mount point, disk or id is arg.
func (l Layout) Find(arg string) (*State, error) {
	all, err := l.List()
	if err != nil {
		return nil, err
	}
	abs := arg
	if a, err := filepath.Abs(arg); err == nil {
		abs = a
	}
	real := abs
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		real = r
	}
	for _, st := range all {
		if st.Mountpoint == abs || st.Mountpoint == real || st.ID == arg {
			return st, nil
		}
	}
	var found []*State
	for _, st := range all {
		for _, d := range st.Disks {
			if d == abs || d == real {
				found = append(found, st)
				break
			}
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
	default:
		var mps []string
		for _, st := range found {
			mps = append(mps, st.Mountpoint)
		}
		return nil, fmt.Errorf("%s is mounted %d times (at %s): give the mount point", arg, len(found), strings.Join(mps, ", "))
	}
	return nil, fmt.Errorf("%s is not mounted by qmount (see qmount status)", arg)
}

// remove deletes a mount's directory.
func (st *State) remove() error {
	if st.Dir == "" || !strings.Contains(st.Dir, string(filepath.Separator)+"mounts"+string(filepath.Separator)) {
		return fmt.Errorf("refusing to remove state directory %q", st.Dir)
	}
	if err := os.RemoveAll(st.Dir); err != nil {
		return fmt.Errorf("removing mount state: %w", err)
	}
	return nil
}

// pruneLogs keeps the logs of the newest KeepLogs mounts.
func (l Layout) pruneLogs() {
	ents, err := os.ReadDir(l.logsDir())
	if err != nil {
		return
	}
	ids := map[string]bool{}
	var order []string
	for _, e := range ents {
		id := strings.TrimSuffix(strings.TrimSuffix(e.Name(), ".log"), ".console")
		if !ids[id] {
			ids[id] = true
			order = append(order, id)
		}
	}
	sort.Slice(order, func(i, j int) bool { return idLess(order[i], order[j]) })
	for len(order) > KeepLogs {
		id := order[0]
		order = order[1:]
		if _, err := os.Stat(l.mountDir(id)); err == nil {
			continue // still mounted
		}
		os.Remove(l.logPath(id))
		os.Remove(l.consolePath(id))
	}
}

// idLess orders ids by their time prefix (hex milliseconds), then by text.
func idLess(a, b string) bool {
	ta, _, _ := strings.Cut(a, "-")
	tb, _, _ := strings.Cut(b, "-")
	if len(ta) != len(tb) {
		return len(ta) < len(tb)
	}
	return a < b
}

// LatestLog returns the log of the most recent mount (running or not).
func (l Layout) LatestLog() (id string, err error) {
	ents, err := os.ReadDir(l.logsDir())
	if err != nil || len(ents) == 0 {
		return "", errors.New("no mount has been logged yet")
	}
	var best string
	for _, e := range ents {
		n, ok := strings.CutSuffix(e.Name(), ".log")
		if !ok {
			continue
		}
		if best == "" || idLess(best, n) {
			best = n
		}
	}
	if best == "" {
		return "", errors.New("no mount has been logged yet")
	}
	return best, nil
}

// LogPaths returns the supervisor log and console log of mount id.
func (l Layout) LogPaths(id string) (log, console string) {
	return l.logPath(id), l.consolePath(id)
}

// Active reports whether mount id still has its state (its supervisor
// runs, or it is stale and not yet stopped).
func (l Layout) Active(id string) bool {
	_, err := os.Stat(l.mountDir(id))
	return err == nil
}
