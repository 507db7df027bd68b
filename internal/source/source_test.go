package source

import (
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	existing := map[string]bool{"/img/odd:name.img": true, "a.img": true}
	exists := func(p string) bool { return existing[p] }
	for _, tc := range []struct {
		id      string
		want    *Source
		wantErr string
	}{
		{id: "a.img", want: &Source{Kind: Single, Disks: []string{"a.img"}}},
		{id: "a.img@2", want: &Source{Kind: Single, Disks: []string{"a.img@2"}}},
		{id: "/img/odd:name.img", want: &Source{Kind: Single, Disks: []string{"/img/odd:name.img"}}},
		{id: "lvm:vg0:a.img:home", want: &Source{Kind: LVM, VG: "vg0", LV: "home", Disks: []string{"a.img"}}},
		{id: "lvm:big:a.img:b.img:data", want: &Source{Kind: LVM, VG: "big", LV: "data", Disks: []string{"a.img", "b.img"}}},
		{id: "lvm:vg0:a.img:", want: &Source{Kind: LVM, VG: "vg0", Disks: []string{"a.img"}}},
		{id: "raid:a.img:b.img", want: &Source{Kind: RAID, Disks: []string{"a.img", "b.img"}}},
		{id: "raid:b.img", want: &Source{Kind: RAID, Disks: []string{"b.img"}}},
		{id: "a.img:b.img", want: &Source{Kind: Multi, Disks: []string{"a.img", "b.img"}}},
		{id: "", wantErr: "no disk given"},
		{id: "lvm:vg0:home", wantErr: "lvm:VG:DISK"},
		{id: "lvm:bad/name:a.img:home", wantErr: "not a volume group name"},
		{id: "lvm:vg0:a.img:bad name", wantErr: "not a logical volume name"},
		{id: "lvm:vg0::home", wantErr: "empty disk name"},
		{id: "raid:", wantErr: "empty disk name"},
		{id: "raid:a.img::b.img", wantErr: "empty disk name"},
		{id: "a.img:", wantErr: "empty disk name"},
		{id: "raid:" + strings.Repeat("d:", 16) + "d", wantErr: "at most 16"},
	} {
		t.Run(tc.id, func(t *testing.T) {
			got, err := Parse(tc.id, exists)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Parse(%q) = %+v, %v; want error %q", tc.id, got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Parse(%q) = %+v, want %+v", tc.id, got, tc.want)
			}
			if again, err := Parse(got.String(), nil); err != nil || !reflect.DeepEqual(again, got) && got.Kind != Single {
				t.Errorf("round trip of %q: %+v, %v", got.String(), again, err)
			}
		})
	}
}
