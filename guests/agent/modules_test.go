package agent

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
)

// A modules.dep in depmod's format (paths relative to the module dir, each
// module listing all it depends on), shaped like Debian 12's.
const sampleModulesDep = `kernel/lib/crc16.ko:
kernel/crypto/crc32c_generic.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/fs/fat/fat.ko:
kernel/fs/fat/vfat.ko: kernel/fs/fat/fat.ko
kernel/drivers/virtio/virtio_mmio.ko:
kernel/drivers/block/virtio_blk.ko:
kernel/drivers/char/virtio_console.ko:
kernel/net/vmw_vsock/vsock.ko:
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/net/vmw_vsock/vsock.ko
kernel/fs/nls/nls-cp437.ko.xz:
`

const sampleBuiltin = `kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_ring.ko
kernel/fs/xfs/xfs.ko
`

func TestModuleName(t *testing.T) {
	for in, want := range map[string]string{
		"ext4":                           "ext4",
		"kernel/fs/ext4/ext4.ko":         "ext4",
		"kernel/fs/nls/nls-cp437.ko.xz":  "nls_cp437",
		"/lib/modules/x/a/b-c_d.ko.zst":  "b_c_d",
		"crc32c-generic":                 "crc32c_generic",
		"kernel/drivers/x/virtio_blk.ko": "virtio_blk",
	} {
		if got := ModuleName(in); got != want {
			t.Errorf("ModuleName(%q) = %q, want %q", in, got, want)
		}
	}
}

// recorder is a LoadFunc that records the order of loads and checks that
// every dependency was loaded before its dependent.
type recorder struct {
	db      *ModuleDB
	mu      sync.Mutex
	order   []string
	failOn  string
	present []string
}

func (r *recorder) load(_ context.Context, name, path string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !strings.HasPrefix(path, "/lib/modules/test/kernel/") {
		return errors.New("bad path " + path)
	}
	if name == r.failOn {
		return errors.New("no such device")
	}
	for _, d := range r.db.deps[name] {
		if !slices.Contains(r.order, d) && !slices.Contains(r.present, d) {
			return errors.New(name + " loaded before its dependency " + d)
		}
	}
	if slices.Contains(r.order, name) {
		return errors.New(name + " loaded twice")
	}
	r.order = append(r.order, name)
	return nil
}

func TestModuleDBLoad(t *testing.T) {
	for _, tc := range []struct {
		name    string
		load    [][]string // successive Load calls
		present []string   // already loaded (/sys/module)
		failOn  string
		want    []string // loaded, in any order
		wantErr string
	}{
		{name: "deps first", load: [][]string{{"crc32c_generic", "ext4"}},
			want: []string{"crc16", "crc32c_generic", "ext4", "jbd2", "mbcache"}},
		{name: "once across calls", load: [][]string{{"vfat"}, {"vfat", "fat"}},
			want: []string{"fat", "vfat"}},
		{name: "chain", load: [][]string{{"vmw_vsock_virtio_transport", "virtio_blk"}},
			want: []string{"virtio_blk", "vmw_vsock_virtio_transport", "vmw_vsock_virtio_transport_common", "vsock"}},
		{name: "builtin skipped", load: [][]string{{"virtio", "xfs", "virtio_mmio"}},
			want: []string{"virtio_mmio"}},
		{name: "present skipped", load: [][]string{{"ext4"}}, present: []string{"jbd2", "mbcache"},
			want: []string{"crc16", "ext4"}},
		{name: "unknown but present", load: [][]string{{"ext4_builtin_somewhere"}}, present: []string{"ext4_builtin_somewhere"}},
		{name: "unknown", load: [][]string{{"nosuchfs", "fat"}}, want: []string{"fat"},
			wantErr: "module nosuchfs: not in /lib/modules/test/modules.dep"},
		{name: "dependency fails", load: [][]string{{"ext4", "fat"}}, failOn: "jbd2",
			want: []string{"crc16", "fat", "mbcache"}, wantErr: "loading module jbd2: no such device"},
		{name: "compressed name", load: [][]string{{"nls-cp437"}}, want: []string{"nls_cp437"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, err := ParseModuleDB("/lib/modules/test", strings.NewReader(sampleModulesDep), strings.NewReader(sampleBuiltin))
			if err != nil {
				t.Fatal(err)
			}
			r := &recorder{db: db, failOn: tc.failOn, present: tc.present}
			present := func(n string) bool { return slices.Contains(tc.present, n) }
			var errs []error
			for _, names := range tc.load {
				errs = append(errs, db.Load(context.Background(), names, present, r.load))
			}
			err = errors.Join(errs...)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("Load: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Load error %v, want %q", err, tc.wantErr)
			}
			got := slices.Sorted(slices.Values(r.order))
			if !slices.Equal(got, tc.want) {
				t.Errorf("loaded %v, want %v", got, tc.want)
			}
		})
	}
}

func TestModuleDBConcurrentLoads(t *testing.T) {
	db, err := ParseModuleDB("/lib/modules/test", strings.NewReader(sampleModulesDep), nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{db: db}
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			errs[i] = db.Load(context.Background(), []string{"ext4", "vfat", "crc32c_generic"}, nil, r.load)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if len(r.order) != 7 {
		t.Errorf("loaded %v, want 7 modules once each", r.order)
	}
}

func TestParseModuleDBErrors(t *testing.T) {
	for name, dep := range map[string]string{
		"no colon": "kernel/a.ko\n",
		"cycle":    "kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/c.ko\nkernel/c.ko: kernel/a.ko\n",
	} {
		if _, err := ParseModuleDB("/m", strings.NewReader(dep), nil); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	db, err := ParseModuleDB("/m", strings.NewReader(sampleModulesDep), strings.NewReader(sampleBuiltin))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"ext4": true, "virtio-ring": true, "nls_cp437": true, "zfs": false} {
		if db.Has(name) != want {
			t.Errorf("Has(%s) = %v", name, !want)
		}
	}
}
