package wire

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

func TestMessageRoundTrip(t *testing.T) {
	msgs := []*Message{
		{Type: TypeHello, Version: Version, Kernel: "6.1.0-28-amd64", Arch: "amd64"},
		{Type: TypeMount, Mount: &MountRequest{Disks: []string{"qmount0", "qmount1"}, Partition: 2, FSType: "ext4", Options: "noatime,subvol=@home", ReadOnly: true}},
		{Type: TypeLog, Level: "info", Msg: "loading modules\nwith a newline"},
		{Type: TypeMounted, FSType: "ext4", Timeline: &Timeline{Init: 900, Modules: 1200, Connected: 1250, Mounted: 1400, Serving: 1410}},
		{Type: TypeMounted, FSType: "xfs", Extents: &ExtentSource{Disk: 0, Offset: 1 << 20, Size: 1 << 30}},
		{Type: TypeError, Step: "mount", Error: "EXT4-fs (vda): VFS: Can't find ext4 filesystem"},
		{Type: TypeShutdown},
		{Type: TypeBye},
		{Type: TypeMount, Mount: &MountRequest{Disks: []string{"qmount0", "qmount1"}, RAID: true, VG: "vg0", LV: "home"}},
		{Type: TypeNeedPassphrase, Device: "qmount1", Kind: "LUKS2", Attempt: 2},
		{Type: TypeUnlock, Passphrase: "p\"w\n d"},
		{Type: TypeUnlock, Abort: true},
		{Type: TypeExec, Exec: &ExecRequest{Args: []string{"/bin/sh", "-c", "echo hi"}, TTY: true, Rows: 24, Cols: 80, Disks: []string{"qmount0"}}},
		{Type: TypeInput, Data: []byte{0, 1, 2, 0xff, '\n'}},
		{Type: TypeInput, EOF: true},
		{Type: TypeOutput, Data: []byte("hello\r\n")},
		{Type: TypeExited, Code: 3},
	}
	var buf bytes.Buffer
	enc := NewEncoder(&buf)
	for _, m := range msgs {
		if err := enc.Encode(m); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(buf.String(), "\n"); n != len(msgs) {
		t.Fatalf("%d lines for %d messages", n, len(msgs))
	}
	dec := NewDecoder(&buf)
	for _, want := range msgs {
		got, err := dec.Decode()
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v, want %+v", got, want)
		}
	}
	if _, err := dec.Decode(); !errors.Is(err, io.EOF) {
		t.Fatalf("want EOF, got %v", err)
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, line := range []string{
		`{"type":"hello","version":99}`,
		`{"type":"nope"}`,
		`{"type":"mount"}`,
		`{"type":"mount","mount":{"disks":["vda"]}}`,
		`{"type":"mount","mount":{"disks":["qmount0"],"fstype":"ext4,ro"}}`,
		`{"type":"error"}`,
		`{"type":"mounted","extents":{"disk":0,"offset":-1,"size":10}}`,
		`{"type":"mounted","extents":{"disk":0,"offset":0,"size":0}}`,
		`{"type":"mounted","extents":{"disk":-1,"offset":0,"size":10}}`,
		`{"type":"mounted","extents":{"disk":0,"offset":9223372036854775807,"size":10}}`,
		`{"type":"mount","mount":{"disks":["qmount0"],"lv":"home"}}`,
		`{"type":"mount","mount":{"disks":["qmount0"],"vg":"vg/0","lv":"home"}}`,
		`{"type":"mount","mount":{"disks":["qmount0"],"vg":"-vg","lv":"home"}}`,
		`{"type":"need_passphrase","device":"qmount0"}`,
		`{"type":"unlock"}`,
		`{"type":"exec"}`,
		`{"type":"exec","exec":{"args":[]}}`,
		`{"type":"exec","exec":{"args":["sh"],"disks":["sda"]}}`,
		`{"type":"output","data":"` + strings.Repeat("QUFB", MaxDataBytes/3+1) + `"}`,
		`not json`,
		`{"type":"log","msg":"` + strings.Repeat("x", MaxLineBytes) + `"}`,
	} {
		if _, err := NewDecoder(strings.NewReader(line + "\n")).Decode(); err == nil || errors.Is(err, io.EOF) {
			t.Errorf("accepted %.60q: %v", line, err)
		}
	}
}

func TestDiskSerial(t *testing.T) {
	for i := range 20 {
		got, ok := ParseDiskSerial(DiskSerial(i))
		if !ok || got != i {
			t.Errorf("ParseDiskSerial(DiskSerial(%d)) = %d, %v", i, got, ok)
		}
	}
	for _, bad := range []string{"", "qmount", "qmount01", "qmount-1", "qmountx", "disk0", "qmount256"} {
		if _, ok := ParseDiskSerial(bad); ok {
			t.Errorf("ParseDiskSerial(%q) accepted", bad)
		}
	}
}

func TestParseCmdline(t *testing.T) {
	got := ParseCmdline("console=hvc0 quiet qmount.debug=1 qmount.modules=ext4,crc32c_generic root=/dev/x")
	want := map[string]string{ParamDebug: "1", ParamModules: "ext4,crc32c_generic"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestPorts(t *testing.T) {
	seenName, seenVsock := map[string]bool{}, map[uint32]bool{}
	for _, p := range Ports {
		if seenName[p.Name] || seenVsock[p.Vsock] {
			t.Fatalf("duplicate port %+v", p)
		}
		seenName[p.Name], seenVsock[p.Vsock] = true, true
		if got, ok := PortByName(p.Name); !ok || got != p {
			t.Fatalf("PortByName(%q) = %+v, %v", p.Name, got, ok)
		}
	}
}

func TestMessageStringRedactsPassphrase(t *testing.T) {
	m := &Message{Type: TypeUnlock, Passphrase: "hunter2"}
	if s := m.String(); strings.Contains(s, "hunter2") || !strings.Contains(s, "redacted") {
		t.Fatalf("String() = %s", s)
	}
	if m.Passphrase != "hunter2" {
		t.Fatal("String changed the message")
	}
}

func TestValidLVMName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"vg0", true}, {"my_vg.data-1+x", true}, {"", false}, {"-vg", false}, {".", false},
		{"..", false}, {"a/b", false}, {"a b", false}, {"a:b", false}, {strings.Repeat("a", 128), false},
	} {
		if got := ValidLVMName(tc.name); got != tc.ok {
			t.Errorf("ValidLVMName(%q) = %v, want %v", tc.name, got, tc.ok)
		}
	}
}
