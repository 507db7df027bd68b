package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestList lists a whole-disk image and a GPT image made with sfdisk and
// mkfs, as text and JSON, with and without Microsoft filesystems.
func TestList(t *testing.T) {
	need(t, "sfdisk", "mkfs.ext4", "mkfs.vfat")
	e := newEnv(t)
	plain := filepath.Join(e.work, "plain.img")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(plain, 32<<20); err != nil {
		t.Fatal(err)
	}
	mustExec(t, "mkfs.ext4", "-q", "-F", "-L", "plainlabel", plain)

	gpt := filepath.Join(e.work, "gpt.img")
	if err := os.WriteFile(gpt, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(gpt, 96<<20); err != nil {
		t.Fatal(err)
	}
	sf := exec.Command("sfdisk", "-q", gpt)
	sf.Stdin = strings.NewReader("label: gpt\nstart=2048, size=65536, name=root\nstart=67584, size=65536, name=efi\n")
	if out, err := sf.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	mustExec(t, "mkfs.ext4", "-q", "-F", "-L", "rootfs", "-E", "offset="+itoa(2048*512), gpt, "32M")
	mustExec(t, "mkfs.vfat", "-n", "EFI", "--offset", "67584", gpt, "32768")

	r := e.mustRun("list", "--json", plain, gpt)
	var disks []listedDisk
	if err := json.Unmarshal([]byte(r.stdout), &disks); err != nil {
		t.Fatalf("list --json: %v\n%s", err, r.stdout)
	}
	if len(disks) != 2 {
		t.Fatalf("%d disks listed, want 2:\n%s", len(disks), r.stdout)
	}
	p := disks[0]
	if p.Kind != "image" || len(p.Entries) != 1 || p.Entries[0].Type != "ext4" || p.Entries[0].Name != "plainlabel" || p.Entries[0].Identifier != plain {
		t.Errorf("plain image listed as %+v", p)
	}
	g := disks[1]
	if len(g.Entries) != 2 {
		t.Fatalf("gpt image without -m: %+v, want the table and the ext4 partition", g.Entries)
	}
	if g.Entries[0].Type != "GUID_partition_scheme" || g.Entries[0].Identifier != "" {
		t.Errorf("table entry %+v", g.Entries[0])
	}
	if e1 := g.Entries[1]; e1.Index != 1 || e1.Type != "ext4" || e1.Name != "rootfs" || e1.Identifier != gpt+"@1" || e1.Size != 65536*512 {
		t.Errorf("partition 1 listed as %+v", e1)
	}

	r = e.mustRun("list", "-m", gpt)
	for _, want := range []string{"GUID_partition_scheme", "rootfs", gpt + "@1", "vfat", "EFI", gpt + "@2", "33.6 MB"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("list -m output lacks %q:\n%s", want, r.stdout)
		}
	}

	bad := e.run("list", filepath.Join(e.work, "missing.img"))
	if bad.code != 1 || !strings.Contains(bad.stderr, "no such file") || strings.Count(strings.TrimSpace(bad.stderr), "\n") != 0 {
		t.Errorf("missing image: exit %d, stderr %q", bad.code, bad.stderr)
	}
}

func mustExec(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}
