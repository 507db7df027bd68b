package initramfs

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// checkOrder asserts that every module comes after what it needs.
func checkOrder(t *testing.T, s *ModuleSet) {
	t.Helper()
	pos := map[string]int{}
	for i, m := range s.Order {
		pos[m.Name] = i
	}
	for _, m := range s.Order {
		for _, d := range append(s.before(m.Name), s.SoftPre[m.Name]...) {
			if pos[d] >= pos[m.Name] {
				t.Errorf("%s (at %d) loads before its dependency %s (at %d)", m.Name, pos[m.Name], d, pos[d])
			}
		}
	}
}

func TestClosureDebianAMD64(t *testing.T) {
	k := debianKernel(t, "amd64")
	ix, err := LoadModuleIndex(k.ModulesDir)
	if err != nil {
		t.Fatal(err)
	}
	if ix.Len() < 1000 {
		t.Fatalf("only %d modules indexed", ix.Len())
	}
	tests := []struct {
		request []string
		want    []string
		notWant []string
		softPre map[string][]string
	}{
		{
			request: []string{"ext4"},
			want:    []string{"ext4", "jbd2", "mbcache", "crc16", "crc32c_generic"},
			notWant: []string{"crc32c_intel", "btrfs"},
			// ext4's softdep names the alias crypto-crc32c.
			softPre: map[string][]string{"ext4": {"crc32c_generic"}},
		},
		{
			request: []string{"btrfs"},
			want:    []string{"btrfs", "libcrc32c", "crc32c_generic", "xxhash_generic", "blake2b_generic", "raid6_pq", "xor", "zstd_compress"},
		},
		{request: []string{"vfat"}, want: []string{"vfat", "fat"}},
		{request: []string{"isofs"}, want: []string{"isofs", "cdrom"}},
		{request: []string{"udf"}, want: []string{"udf", "cdrom", "crc_itu_t"}},
		{request: []string{"dm-crypt"}, want: []string{"dm_crypt", "dm_mod"}},
		{request: []string{"raid456"}, want: []string{"raid456", "md_mod", "async_raid6_recov", "async_pq", "async_tx", "raid6_pq"}},
		{request: []string{"fs-ext4"}, want: []string{"ext4", "jbd2"}},        // an alias
		{request: []string{"nls-iso8859-1"}, want: []string{"nls_iso8859_1"}}, // dashes
		{request: []string{"vmw_vsock_virtio_transport"}, want: []string{"vsock", "virtio", "virtio_ring"}},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.request, ","), func(t *testing.T) {
			s, err := ix.Closure(tc.request, nil)
			if err != nil {
				t.Fatal(err)
			}
			names := s.Names()
			for _, w := range tc.want {
				if !slices.Contains(names, w) {
					t.Errorf("closure %v lacks %s", names, w)
				}
			}
			for _, w := range tc.notWant {
				if slices.Contains(names, w) {
					t.Errorf("closure %v has %s", names, w)
				}
			}
			for m, pre := range tc.softPre {
				if !slices.Equal(s.SoftPre[m], pre) {
					t.Errorf("SoftPre[%s] = %v, want %v", m, s.SoftPre[m], pre)
				}
			}
			checkOrder(t, s)
			var dep bytes.Buffer
			if err := s.WriteModulesDep(&dep); err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(dep.String(), "\n"); n != len(s.Order) {
				t.Errorf("modules.dep has %d lines for %d modules", n, len(s.Order))
			}
			// modprobe order: loading each line's list from the end first
			// never loads a module before something it needs.
			for _, m := range s.Order {
				line, _ := modulesDepLine(dep.String(), m.Path)
				list := strings.Fields(line)
				loaded := map[string]bool{}
				for i := len(list) - 1; i >= 0; i-- {
					dm := ix.mods[ModName(list[i])]
					for _, d := range append(s.before(dm.Name), s.SoftPre[dm.Name]...) {
						if !loaded[d] {
							t.Errorf("%s line: %s loads before its dependency %s", m.Name, dm.Name, d)
						}
					}
					loaded[dm.Name] = true
				}
			}
		})
	}

	t.Run("unknown", func(t *testing.T) {
		if _, err := ix.Closure([]string{"no_such_module"}, nil); err == nil || !strings.Contains(err.Error(), "no_such_module") {
			t.Errorf("required unknown module: err = %v", err)
		}
		s, err := ix.Closure([]string{"ext4"}, []string{"no_such_module"})
		if err != nil || !slices.Equal(s.Missing, []string{"no_such_module"}) {
			t.Errorf("optional unknown module: err %v, missing %v", err, s.Missing)
		}
	})
	t.Run("builtin", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(k.ModulesDir, "modules.builtin"))
		if err != nil {
			t.Fatal(err)
		}
		first := ModName(strings.Fields(string(b))[0])
		s, err := ix.Closure([]string{first}, nil)
		if err != nil || !slices.Equal(s.Builtin, []string{first}) || len(s.Order) != 0 {
			t.Errorf("built-in %s: err %v, builtin %v, order %v", first, err, s.Builtin, s.Names())
		}
	})
}

func TestDefaultModules(t *testing.T) {
	for _, arch := range []string{"amd64", "arm64"} {
		t.Run(arch, func(t *testing.T) {
			k := debianKernel(t, arch)
			ix, err := LoadModuleIndex(k.ModulesDir)
			if err != nil {
				t.Fatal(err)
			}
			s, err := ix.Closure(DefaultModules, nil)
			if err != nil {
				t.Fatal(err)
			}
			names := s.Names()
			for _, m := range DefaultModules {
				if !slices.Contains(names, ModName(m)) && !slices.Contains(s.Builtin, m) {
					t.Errorf("%s neither shipped nor built in", m)
				}
			}
			checkOrder(t, s)
			t.Logf("%s: %d modules requested, %d shipped, builtin %v", k.Release, len(DefaultModules), len(names), s.Builtin)
		})
	}
}

// fakeModule writes a .ko whose .modinfo holds info (key=value pairs).
func fakeModule(t *testing.T, dir, rel string, info ...string) {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "modinfo")
	if err := os.WriteFile(raw, []byte(strings.Join(info, "\x00")+"\x00"), 0o644); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, rel)
	os.MkdirAll(filepath.Dir(dst), 0o755)
	cmd := exec.Command("objcopy", "-I", "binary", "-O", "elf64-x86-64", "--rename-section", ".data=.modinfo", raw, dst)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("objcopy: %v: %s", err, out)
	}
}

// TestClosureSynthetic covers softdep corner cases on a made-up tree of
// real ELF modules: a softdep cycle, alias globs, several providers, a
// built-in softdep, and a missing hard dependency.
func TestClosureSynthetic(t *testing.T) {
	needTool(t, "objcopy", "binutils")
	dir := filepath.Join(t.TempDir(), "6.0.0-test")
	fakeModule(t, dir, "kernel/a.ko", "name=a", "softdep=pre: b post: c", "depends=")
	fakeModule(t, dir, "kernel/b.ko", "name=b", "depends=c")
	fakeModule(t, dir, "kernel/c.ko", "name=c", "softdep=pre: a", "depends=") // cycle a -> b -> c -> a
	fakeModule(t, dir, "kernel/fs/myfs.ko", "name=myfs", "softdep=pre: crypto-foo builtin-thing nothing-provides-this", "depends=d_e")
	fakeModule(t, dir, "kernel/d-e.ko", "name=d_e", "depends=", "alias=fs-de")
	fakeModule(t, dir, "kernel/foo_arch.ko", "name=foo_arch", "alias=crypto-foo")
	fakeModule(t, dir, "kernel/foo_generic.ko", "name=foo_generic", "alias=crypto-foo")
	fakeModule(t, dir, "kernel/glob.ko", "name=glob", "alias=pci:v00001AF4d*")
	fakeModule(t, dir, "kernel/broken.ko", "name=broken", "depends=gone")
	os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte("kernel/lib/bi.ko\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "modules.builtin.modinfo"), []byte("bi.alias=builtin-thing\x00bi.license=GPL\x00"), 0o644)

	ix, err := LoadModuleIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	if ix.Release != "6.0.0-test" || ix.Len() != 9 {
		t.Fatalf("release %q, %d modules", ix.Release, ix.Len())
	}

	s, err := ix.Closure([]string{"a"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Names(); len(got) != 3 {
		t.Errorf("closure of a = %v, want a, b, c", got)
	}
	checkOrder(t, s)
	// One of the soft edges a->b, c->a had to go.
	if len(s.SoftPre["a"])+len(s.SoftPre["c"]) != 1 {
		t.Errorf("soft edges kept: a %v, c %v; want exactly one", s.SoftPre["a"], s.SoftPre["c"])
	}
	if !slices.Equal(s.SoftPost["a"], []string{"c"}) {
		t.Errorf("SoftPost[a] = %v", s.SoftPost["a"])
	}

	s, err = ix.Closure([]string{"myfs"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Names(); !slices.Equal(got, []string{"d_e", "foo_generic", "myfs"}) {
		t.Errorf("closure of myfs = %v, want d_e foo_generic myfs", got)
	}
	var dep, soft bytes.Buffer
	s.WriteModulesDep(&dep)
	s.WriteModulesSoftdep(&soft)
	if want := "kernel/fs/myfs.ko: kernel/foo_generic.ko kernel/d-e.ko\n"; !strings.Contains(dep.String(), want) {
		t.Errorf("modules.dep:\n%s\nwant line %q", dep.String(), want)
	}
	if want := "softdep myfs pre: foo_generic\n"; !strings.Contains(soft.String(), want) {
		t.Errorf("modules.softdep:\n%s\nwant %q", soft.String(), want)
	}

	for _, tc := range []struct{ req, want string }{
		{"fs-de", "d_e"}, {"pci:v00001AF4d00001001sv*", "glob"}, {"d-e", "d_e"},
	} {
		s, err := ix.Closure([]string{tc.req}, nil)
		if err != nil || !slices.Equal(s.Names(), []string{tc.want}) {
			t.Errorf("Closure(%s) = %v, %v; want %s", tc.req, s, err, tc.want)
		}
	}
	if s, err := ix.Closure([]string{"builtin-thing", "bi"}, nil); err != nil || len(s.Builtin) != 2 {
		t.Errorf("builtin by alias and name: %v %v", s, err)
	}
	if _, err := ix.Closure([]string{"broken"}, nil); err == nil || !strings.Contains(err.Error(), "gone") {
		t.Errorf("missing hard dependency: err = %v", err)
	}
}
