package supervisor

import (
	"strings"
	"testing"

	"github.com/qmount/qmount/guests"
	"github.com/qmount/qmount/internal/source"
	"github.com/qmount/qmount/probe"
)

func TestPlanStack(t *testing.T) {
	luks := func(kdf string, kib int64) *probe.Content {
		return &probe.Content{Type: "crypto_LUKS", Usage: "crypto", LUKS: &probe.LUKSInfo{Version: 2, PBKDF: kdf, PBKDFMemoryKiB: kib}}
	}
	pv := func(vg string, lvs ...string) *probe.Content {
		info := &probe.LVMInfo{VGName: vg}
		for _, lv := range lvs {
			info.LVs = append(info.LVs, probe.LVMLV{Name: lv, Visible: true})
		}
		return &probe.Content{Type: "LVM2_member", Usage: "raid", LVM: info}
	}
	md := func(n int) *probe.Content {
		return &probe.Content{Type: "linux_raid_member", Usage: "raid", MD: &probe.MDInfo{RaidDisks: n, Name: "host:data"}}
	}
	ext4 := &probe.Content{Type: "ext4", Usage: "filesystem", Label: "L"}
	btrfs := &probe.Content{Type: "btrfs", Usage: "filesystem", Label: "pair"}
	for _, tc := range []struct {
		name       string
		src        source.Source
		contents   []*probe.Content
		ro         bool
		wantErr    string
		wantMem    int
		wantRO     bool
		wantType   string
		wantLabel  string
		containers []string
		encrypted  bool
	}{
		{name: "luks pbkdf2", src: source.Source{Kind: source.Single}, contents: []*probe.Content{luks("pbkdf2", 0)}, wantMem: 512, containers: []string{"crypto_LUKS"}, encrypted: true},
		{name: "luks argon2id 256 MiB", src: source.Source{Kind: source.Single}, contents: []*probe.Content{luks("argon2id", 262144)}, wantMem: 768, containers: []string{"crypto_LUKS"}, encrypted: true},
		{name: "luks argon2id 1 GiB", src: source.Source{Kind: source.Single}, contents: []*probe.Content{luks("argon2id", 1048576)}, wantMem: 1536, containers: []string{"crypto_LUKS"}, encrypted: true},
		{name: "lvm", src: source.Source{Kind: source.LVM, VG: "vg0", LV: "home"}, contents: []*probe.Content{pv("vg0", "root", "home")}, wantMem: 512, wantLabel: "home", containers: []string{"LVM2_member"}},
		{name: "lvm wrong vg", src: source.Source{Kind: source.LVM, VG: "vg1", LV: "home"}, contents: []*probe.Content{pv("vg0", "home")}, wantErr: "belongs to volume group vg0, not vg1"},
		{name: "lvm unknown lv", src: source.Source{Kind: source.LVM, VG: "vg0", LV: "x"}, contents: []*probe.Content{pv("vg0", "root", "home")}, wantErr: "no logical volume x (it has: root, home)"},
		{name: "lvm on ext4", src: source.Source{Kind: source.LVM, VG: "vg0", LV: "x"}, contents: []*probe.Content{ext4}, wantErr: "not an LVM physical volume"},
		{name: "lvm on luks", src: source.Source{Kind: source.LVM, VG: "vg0", LV: "home"}, contents: []*probe.Content{luks("pbkdf2", 0)}, wantMem: 512, wantLabel: "home", containers: []string{"crypto_LUKS"}, encrypted: true},
		{name: "raid complete", src: source.Source{Kind: source.RAID}, contents: []*probe.Content{md(2), md(2)}, wantMem: 512, wantLabel: "data", containers: []string{"linux_raid_member"}},
		{name: "raid degraded", src: source.Source{Kind: source.RAID}, contents: []*probe.Content{md(2)}, wantMem: 512, wantRO: true, wantLabel: "data", containers: []string{"linux_raid_member"}},
		{name: "raid of ext4", src: source.Source{Kind: source.RAID}, contents: []*probe.Content{ext4}, wantErr: "not a Linux RAID member"},
		{name: "btrfs two disks", src: source.Source{Kind: source.Multi}, contents: []*probe.Content{btrfs, btrfs}, wantMem: 512, wantType: "btrfs", wantLabel: "pair"},
		{name: "two filesystems", src: source.Source{Kind: source.Multi}, contents: []*probe.Content{btrfs, ext4}, wantErr: "not one filesystem"},
		{name: "qcow2 unknown", src: source.Source{Kind: source.Multi}, contents: []*probe.Content{nil, btrfs}, wantMem: 512, wantType: "btrfs", wantLabel: "pair"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &Plan{MemoryMiB: DefaultMemoryMiB, ReadOnly: tc.ro}
			for i := range tc.contents {
				p.Disks = append(p.Disks, "/d"+itoa(i))
			}
			if tc.src.Kind == source.Single {
				p.partitionContent = tc.contents[0]
			}
			var sel guests.SelectOptions
			err := p.stack(&tc.src, tc.contents, &sel)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.MemoryMiB != tc.wantMem || p.ReadOnly != tc.wantRO || p.DetectedType != tc.wantType || p.Label != tc.wantLabel ||
				strings.Join(sel.Containers, ",") != strings.Join(tc.containers, ",") || p.Encrypted != tc.encrypted {
				t.Errorf("plan mem %d ro %v type %q label %q containers %v encrypted %v; notes %q", p.MemoryMiB, p.ReadOnly, p.DetectedType, p.Label, sel.Containers, p.Encrypted, p.Notes)
			}
			if (tc.wantMem != DefaultMemoryMiB || tc.wantRO) && len(p.Notes) == 0 {
				t.Error("no note says what changed")
			}
		})
	}
}

func itoa(i int) string { return string(rune('0' + i)) }
