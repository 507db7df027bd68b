package guests

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func writeDef(t *testing.T, dir, name, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name, DefFile), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestShippedDefs(t *testing.T) {
	defs, err := ShippedDefs()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*Def{}
	for _, d := range defs {
		byName[d.Name] = d
		if !d.Shipped || d.Dir != filepath.Join("guests", d.Name) {
			t.Errorf("%s: Shipped %v Dir %q", d.Name, d.Shipped, d.Dir)
		}
		// Every shipped guest has both architectures.
		if !slices.Equal(d.Arches(), []string{"amd64", "arm64"}) {
			t.Errorf("%s: arches %v", d.Name, d.Arches())
		}
	}
	for _, want := range []string{"linux", "linux-6.12", "mini"} {
		if byName[want] == nil {
			t.Fatalf("no shipped guest %s", want)
		}
	}
	linux := byName["linux"]
	if linux.Kernel["amd64"].Debian != "linux-image-amd64" || linux.Kernel["amd64"].Compiled() {
		t.Errorf("linux kernel %+v", linux.Kernel["amd64"])
	}
	fsm := linux.FSModules()
	if !slices.Equal(fsm["ext4"], []string{"crc32c_generic", "ext4"}) || !slices.Equal(fsm["iso9660"], []string{"isofs"}) {
		t.Errorf("linux fs modules %v", fsm)
	}
	if dr, ok := linux.Driver("ntfs", "ntfs-3g"); !ok || !dr.FUSE || !dr.Optional || !slices.Equal(fsm["ntfs-3g"], []string{"fuse"}) {
		t.Errorf("linux ntfs-3g driver %+v %v (fs modules %v)", dr, ok, fsm["ntfs-3g"])
	}
	if dr, ok := byName["linux-6.12"].Driver("ntfs", "ntfs3"); !ok || dr.FUSE {
		t.Errorf("linux-6.12 has no kernel ntfs3 driver: %+v", dr)
	}
	mini := byName["mini"].Kernel["amd64"]
	if !mini.Compiled() || mini.Source != "linux-source-6.1" {
		t.Errorf("mini kernel %+v", mini)
	}
	// The config fragment the definition names exists in the repository.
	if _, err := os.Stat(filepath.Join("..", mini.Config)); err != nil {
		t.Errorf("mini config: %v", err)
	}
}

const customDef = `{
  "name": "custom",
  "description": "ext4 only",
  "kernel": {"amd64": {"debian": "linux-image-amd64"}},
  "boot_modules": ["virtio_mmio", "virtio_blk"],
  "modules": ["virtio_mmio", "virtio_blk", "virtio_console"],
  "filesystems": {
    "ext4": {"modules": ["crc32c_generic", "ext4"]},
    "ntfs": [{"type": "ntfs3", "modules": ["ntfs3"]}, {"type": "ntfs-3g", "fuse": true, "tools": ["/usr/bin/ntfs-3g"], "optional": true}]
  },
  "boot_ms": {"amd64": 1500}
}`

func TestParseDef(t *testing.T) {
	d, err := ParseDef([]byte(customDef))
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "custom" || !d.Supports("amd64") || d.Supports("arm64") || d.BootMS["amd64"] != 1500 {
		t.Errorf("def %+v", d)
	}
	if got := d.FSTypes(); !slices.Equal(got, []string{"ext4", "ntfs"}) {
		t.Errorf("FSTypes %v", got)
	}
	// A single object is a one-driver list whose type is the filesystem's.
	if ds := d.Filesystems["ext4"]; len(ds) != 1 || ds[0].Type != "ext4" {
		t.Errorf("ext4 drivers %+v", ds)
	}
	if got := d.DriverTypes(); !slices.Equal(got, []string{"ext4", "ntfs-3g", "ntfs3"}) {
		t.Errorf("DriverTypes %v", got)
	}
	if got := d.AllModules(); !slices.Equal(got, []string{"virtio_mmio", "virtio_blk", "virtio_console", "crc32c_generic", "ext4", "ntfs3"}) {
		t.Errorf("AllModules %v", got)
	}
	if got := d.AllTools(); !slices.Equal(got, []string{"/usr/bin/ntfs-3g"}) {
		t.Errorf("AllTools %v", got)
	}
	fsm := d.FSModules()
	if !slices.Equal(fsm["ntfs-3g"], []string{"fuse"}) || !slices.Equal(fsm["ntfs3"], []string{"ntfs3"}) {
		t.Errorf("FSModules %v", fsm)
	}
}

func TestParseDefErrors(t *testing.T) {
	const kernel = `"kernel": {"amd64": {"debian": "linux-image-amd64"}}`
	const fss = `"filesystems": {"ext4": {}}`
	tests := []struct {
		name, body, want string
	}{
		{"not json", `{"name": `, "decoding guest definition"},
		{"trailing", `{"name": "a", ` + kernel + `, ` + fss + `} {}`, "trailing data"},
		{"unknown field", `{"name": "a", "kernal": {}, ` + kernel + `, ` + fss + `}`, `unknown field "kernal"`},
		{"unknown driver field", `{"name": "a", ` + kernel + `, "filesystems": {"ext4": {"modulez": []}}}`, `unknown field "modulez"`},
		{"bad name", `{"name": "A/b", ` + kernel + `, ` + fss + `}`, `name "A/b"`},
		{"no kernel", `{"name": "a", ` + fss + `}`, "no kernel"},
		{"unknown arch", `{"name": "a", "kernel": {"mips": {"debian": "linux-image-mips"}}, ` + fss + `}`, `unknown architecture "mips"`},
		{"both sources", `{"name": "a", "kernel": {"amd64": {"debian": "linux-image-amd64", "config": "x.config", "source": "linux-source-6.1"}}, ` + fss + `}`, "either debian or config"},
		{"config without source", `{"name": "a", "kernel": {"amd64": {"config": "x.config"}}, ` + fss + `}`, "want a Debian package"},
		{"bad package", `{"name": "a", "kernel": {"amd64": {"debian": "linux image"}}, ` + fss + `}`, "bad package name"},
		{"no filesystems", `{"name": "a", ` + kernel + `}`, "serves no filesystems"},
		{"empty driver list", `{"name": "a", ` + kernel + `, "filesystems": {"ext4": []}}`, "ext4: no driver"},
		{"fuse without tool", `{"name": "a", ` + kernel + `, "filesystems": {"ntfs": {"type": "ntfs-3g", "fuse": true}}}`, "names no tool"},
		{"driver twice", `{"name": "a", ` + kernel + `, "filesystems": {"ntfs": [{"type": "ntfs3"}, {"type": "ntfs3"}]}}`, "driver ntfs3 twice"},
		{"type differs", `{"name": "a", ` + kernel + `, "filesystems": {"ext3": {"type": "ext4", "modules": ["ext4"]}, "ext4": {"modules": ["ext4", "crc32c_generic"]}}}`, "different modules"},
		{"bad module", `{"name": "a", ` + kernel + `, "modules": ["ext4.ko; rm"], ` + fss + `}`, "bad module name"},
		{"relative tool", `{"name": "a", ` + kernel + `, "tools": ["bin/x"], ` + fss + `}`, "clean absolute path"},
		{"boot_ms arch", `{"name": "a", ` + kernel + `, ` + fss + `, "boot_ms": {"arm64": 100}}`, "boot_ms for arm64"},
		{"boot_ms negative", `{"name": "a", ` + kernel + `, ` + fss + `, "boot_ms": {"amd64": -1}}`, "not a positive number"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := ParseDef([]byte(tc.body))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseDef = %+v, %v; want an error with %q", d, err, tc.want)
			}
		})
	}
}

func TestLoadDefs(t *testing.T) {
	user := t.TempDir()
	writeDef(t, user, "custom", customDef)
	// A user definition named like a shipped one replaces it.
	writeDef(t, user, "linux", strings.ReplaceAll(strings.ReplaceAll(customDef, `"custom"`, `"linux"`), "ext4 only", "my linux"))
	// A directory without guest.json is not a guest.
	os.MkdirAll(filepath.Join(user, "notes"), 0o755)

	defs, err := LoadDefs(user)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range defs {
		names = append(names, d.Name)
	}
	// The shipped guests and the user's (more guests may be shipped).
	for _, want := range []string{"custom", "linux", "linux-6.12", "mini"} {
		if !slices.Contains(names, want) {
			t.Fatalf("names %v lack %s", names, want)
		}
	}
	if !slices.IsSorted(names) {
		t.Errorf("names not sorted: %v", names)
	}
	linux := defs[slices.Index(names, "linux")]
	if linux.Description != "my linux" || linux.Shipped || linux.Dir != filepath.Join(user, "linux") {
		t.Errorf("user linux %+v", linux)
	}

	// The environment variable adds directories too.
	t.Setenv(EnvDefs, user)
	if got := DefDirs(); !slices.Equal(got, []string{user}) {
		t.Errorf("DefDirs() = %v", got)
	}
	d, err := LookupDef("custom", DefDirs()...)
	if err != nil || d.Dir != filepath.Join(user, "custom") {
		t.Fatalf("LookupDef(custom) via $%s = %+v, %v", EnvDefs, d, err)
	}
	if _, err := LookupDef("nope", user); err == nil || !strings.Contains(err.Error(), "custom, linux, linux-6.12") {
		t.Errorf("LookupDef(nope) = %v", err)
	}

	// A broken file, or one whose name differs from its directory, fails
	// the load with the file named.
	bad := t.TempDir()
	writeDef(t, bad, "broken", `{"name": "broken"}`)
	writeDef(t, bad, "other", customDef)
	_, err = LoadDefs(bad)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(bad, "broken", DefFile)) || !strings.Contains(err.Error(), `name "custom" differs from its directory "other"`) {
		t.Errorf("LoadDefs(bad) = %v", err)
	}
	if _, err := LoadDefs(filepath.Join(bad, "missing")); err == nil {
		t.Error("LoadDefs of a missing directory succeeded")
	}
}
