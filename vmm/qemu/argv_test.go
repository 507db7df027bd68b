package qemu

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/qmount/qmount/vmm"
)

func testConfig() vmm.Config {
	return vmm.Config{
		Kernel: "/g/vmlinux", Initrd: "/g/initramfs.cpio", Arch: "amd64",
		Cmdline:   "qmount.modules=ext4",
		MemoryMiB: 512, CPUs: 1,
		Disks:      []vmm.Disk{{Path: "/img/disk.img", Serial: "qmount0"}},
		ConsoleLog: "/s/console.log",
		StateDir:   "/s",
	}
}

func TestBuildArgvFull(t *testing.T) {
	fileDisk := os.NewFile(100, "disk") // never used as a descriptor here
	for _, tc := range []struct {
		name string
		cfg  func(*vmm.Config)
		plan Plan
		want []string
	}{
		{
			name: "amd64 microvm tcg virtio-serial",
			plan: Plan{Binary: "qemu-system-x86_64", Accel: AccelTCG, Transport: TransportSerial, TSCKHz: 2600000, FirstFD: 3},
			want: []string{"qemu-system-x86_64",
				"-M", "microvm,x-option-roms=off,rtc=on",
				"-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", "512",
				"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
				"-kernel", "/g/vmlinux", "-initrd", "/g/initramfs.cpio",
				"-append", "console=ttyS0 reboot=t panic=-1 tsc_early_khz=2600000 quiet qmount.modules=ext4",
				"-chardev", "file,id=con,path=/s/console.log", "-serial", "chardev:con",
				"-qmp", "unix:/s/qmp.sock,server=on,wait=off",
				"-drive", "if=none,id=disk0,file=/img/disk.img,format=raw,cache=writeback,discard=unmap",
				"-device", "virtio-blk-device,drive=disk0,serial=qmount0",
				"-device", "virtio-serial-device",
				"-chardev", "socket,id=port0,path=/s/qmount.ctl.sock,server=on,wait=off",
				"-device", "virtserialport,chardev=port0,name=qmount.ctl",
				"-chardev", "socket,id=port1,path=/s/qmount.9p.sock,server=on,wait=off",
				"-device", "virtserialport,chardev=port1,name=qmount.9p",
			},
		},
		{
			name: "arm64 virt kvm vsock, read-only qcow2 disk from a file",
			cfg: func(c *vmm.Config) {
				c.Arch, c.Kernel, c.CPUs = "arm64", "/g/Image", 2
				c.Disks = []vmm.Disk{{File: fileDisk, Format: "qcow2", ReadOnly: true, Serial: "qmount0"}}
			},
			plan: Plan{Binary: "qemu-system-aarch64", Accel: AccelKVM, Transport: TransportVsock, CID: 1234, TSCKHz: 2600000, FirstFD: 3},
			want: []string{"qemu-system-aarch64",
				"-M", "virt", "-accel", "kvm", "-cpu", "host", "-smp", "2", "-m", "512",
				"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
				"-kernel", "/g/Image", "-initrd", "/g/initramfs.cpio",
				"-append", "console=ttyAMA0 panic=-1 quiet qmount.modules=ext4",
				"-chardev", "file,id=con,path=/s/console.log", "-serial", "chardev:con",
				"-qmp", "unix:/s/qmp.sock,server=on,wait=off",
				"-add-fd", "fd=3,set=1",
				"-drive", "if=none,id=disk0,file=/dev/fdset/1,format=qcow2,cache=writeback,readonly=on",
				"-device", "virtio-blk-pci,drive=disk0,serial=qmount0",
				"-device", "vhost-vsock-pci,guest-cid=1234",
			},
		},
		{
			name: "amd64 q35 fallback, two disks, debug",
			cfg: func(c *vmm.Config) {
				c.Disks = append(c.Disks, vmm.Disk{Path: "/img/b,c.vhdx", Format: "vhdx", ReadOnly: true, Serial: "qmount1"})
				c.ConsoleLog = ""
				c.Cmdline = ""
			},
			plan: Plan{Binary: "/usr/bin/qemu-system-x86_64", Machine: MachineQ35, Accel: AccelKVM, Transport: TransportSerial, Debug: true, FirstFD: 3},
			want: []string{"/usr/bin/qemu-system-x86_64",
				"-M", "q35", "-accel", "kvm", "-cpu", "host", "-smp", "1", "-m", "512",
				"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
				"-kernel", "/g/vmlinux", "-initrd", "/g/initramfs.cpio",
				"-append", "console=ttyS0 reboot=t panic=-1",
				"-chardev", "file,id=con,path=/s/console.log", "-serial", "chardev:con",
				"-qmp", "unix:/s/qmp.sock,server=on,wait=off",
				"-drive", "if=none,id=disk0,file=/img/disk.img,format=raw,cache=writeback,discard=unmap",
				"-device", "virtio-blk-pci,drive=disk0,serial=qmount0",
				"-drive", "if=none,id=disk1,file=/img/b,,c.vhdx,format=vhdx,cache=writeback,readonly=on",
				"-device", "virtio-blk-pci,drive=disk1,serial=qmount1",
				"-device", "virtio-serial-pci",
				"-chardev", "socket,id=port0,path=/s/qmount.ctl.sock,server=on,wait=off",
				"-device", "virtserialport,chardev=port0,name=qmount.ctl",
				"-chardev", "socket,id=port1,path=/s/qmount.9p.sock,server=on,wait=off",
				"-device", "virtserialport,chardev=port1,name=qmount.9p",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			inv, err := BuildArgv(&cfg, tc.plan)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(inv.Argv, tc.want) {
				t.Errorf("argv:\n got %q\nwant %q", inv.Argv, tc.want)
			}
			if inv.QMP != "/s/qmp.sock" {
				t.Errorf("QMP = %q", inv.QMP)
			}
		})
	}
}

// flagValues returns the values following each occurrence of flag.
func flagValues(argv []string, flag string) []string {
	var v []string
	for i := 0; i+1 < len(argv); i++ {
		if argv[i] == flag {
			v = append(v, argv[i+1])
		}
	}
	return v
}

func TestBuildArgvVariants(t *testing.T) {
	base := Plan{Binary: "qemu-system-x86_64", Accel: AccelTCG, Transport: TransportSerial, FirstFD: 3}
	f1, f2 := os.NewFile(100, "a"), os.NewFile(101, "b")
	for _, tc := range []struct {
		name       string
		cfg        func(*vmm.Config)
		plan       func(*Plan)
		flag       string
		want       []string
		extraFiles []*os.File
	}{
		{name: "hvf", plan: func(p *Plan) { p.Accel = AccelHVF }, flag: "-cpu", want: []string{"host"}},
		{name: "arm64 tcg cpu", cfg: func(c *vmm.Config) { c.Arch = "arm64" }, flag: "-cpu", want: []string{"cortex-a57"}},
		{name: "arm64 tcg machine", cfg: func(c *vmm.Config) { c.Arch = "arm64" }, flag: "-M", want: []string{"virt"}},
		{name: "unsafe cache only on request", plan: func(p *Plan) { p.UnsafeCache = true }, flag: "-drive",
			want: []string{"if=none,id=disk0,file=/img/disk.img,format=raw,cache=unsafe,discard=unmap"}},
		{name: "no tsc when unknown", plan: func(p *Plan) { p.TSCKHz = 0 }, flag: "-append",
			want: []string{"console=ttyS0 reboot=t panic=-1 quiet qmount.modules=ext4"}},
		{name: "debug from the command line", cfg: func(c *vmm.Config) { c.Cmdline = "qmount.debug=1" }, flag: "-append",
			want: []string{"console=ttyS0 reboot=t panic=-1 tsc_early_khz=2600000 qmount.debug=1"}},
		{name: "qmount.debug=0 stays quiet", cfg: func(c *vmm.Config) { c.Cmdline = "qmount.debug=0" }, flag: "-append",
			want: []string{"console=ttyS0 reboot=t panic=-1 tsc_early_khz=2600000 quiet qmount.debug=0"}},
		{name: "arm64 has no x86 parameters", cfg: func(c *vmm.Config) { c.Arch = "arm64"; c.Cmdline = "" },
			plan: func(p *Plan) { p.TSCKHz = 2600000 }, flag: "-append", want: []string{"console=ttyAMA0 panic=-1 quiet"}},
		{name: "vsock microvm", plan: func(p *Plan) { p.Transport, p.CID = TransportVsock, 3 }, flag: "-device",
			want: []string{"virtio-blk-device,drive=disk0,serial=qmount0", "vhost-vsock-device,guest-cid=3"}},
		{name: "no disks", cfg: func(c *vmm.Config) { c.Disks = nil }, flag: "-drive", want: nil},
		{name: "files get consecutive fd sets", cfg: func(c *vmm.Config) {
			c.Disks = []vmm.Disk{{File: f1, Serial: "qmount0"}, {Path: "/x.img", ReadOnly: true, Serial: "qmount1"}, {File: f2, ReadOnly: true, Serial: "qmount2"}}
		}, flag: "-add-fd", want: []string{"fd=3,set=1", "fd=4,set=2"}, extraFiles: []*os.File{f1, f2}},
		{name: "fd set paths", cfg: func(c *vmm.Config) {
			c.Disks = []vmm.Disk{{File: f1, Serial: "qmount0"}, {File: f2, ReadOnly: true, Serial: "qmount1"}}
		}, flag: "-drive", want: []string{
			"if=none,id=disk0,file=/dev/fdset/1,format=raw,cache=writeback,discard=unmap",
			"if=none,id=disk1,file=/dev/fdset/2,format=raw,cache=writeback,readonly=on"},
			extraFiles: []*os.File{f1, f2}},
		{name: "first fd is the plan's", cfg: func(c *vmm.Config) { c.Disks = []vmm.Disk{{File: f1, Serial: "qmount0"}} },
			plan: func(p *Plan) { p.FirstFD = 5 }, flag: "-add-fd", want: []string{"fd=5,set=1"}, extraFiles: []*os.File{f1}},
		{name: "commas in the console path", cfg: func(c *vmm.Config) { c.ConsoleLog = "/s/a,b.log" }, flag: "-chardev",
			want: []string{"file,id=con,path=/s/a,,b.log",
				"socket,id=port0,path=/s/qmount.ctl.sock,server=on,wait=off",
				"socket,id=port1,path=/s/qmount.9p.sock,server=on,wait=off"}},
		{name: "vmdk and vdi formats", cfg: func(c *vmm.Config) {
			c.Disks = []vmm.Disk{{Path: "/a.vmdk", Format: "vmdk", Serial: "qmount0"}, {Path: "/b.vdi", Format: "vdi", ReadOnly: true, Serial: "qmount1"}}
		}, flag: "-drive", want: []string{
			"if=none,id=disk0,file=/a.vmdk,format=vmdk,cache=writeback,discard=unmap",
			"if=none,id=disk1,file=/b.vdi,format=vdi,cache=writeback,readonly=on"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			plan := base
			plan.TSCKHz = 2600000
			if tc.plan != nil {
				tc.plan(&plan)
			}
			inv, err := BuildArgv(&cfg, plan)
			if err != nil {
				t.Fatal(err)
			}
			if got := flagValues(inv.Argv, tc.flag); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("%s values:\n got %q\nwant %q", tc.flag, got, tc.want)
			}
			if !reflect.DeepEqual(inv.ExtraFiles, tc.extraFiles) {
				t.Errorf("ExtraFiles = %v, want %v", inv.ExtraFiles, tc.extraFiles)
			}
		})
	}
}

func TestBuildArgvRejects(t *testing.T) {
	base := Plan{Binary: "qemu-system-x86_64", Accel: AccelTCG, Transport: TransportSerial, FirstFD: 3}
	for _, tc := range []struct {
		name string
		cfg  func(*vmm.Config)
		plan func(*Plan)
		want string
	}{
		{name: "invalid config", cfg: func(c *vmm.Config) { c.MemoryMiB = 0 }, want: "memory"},
		{name: "no arch", cfg: func(c *vmm.Config) { c.Arch = "" }, want: "arch"},
		{name: "unsupported arch", cfg: func(c *vmm.Config) { c.Arch = "riscv64" }, want: "not supported"},
		{name: "arm64 on microvm", cfg: func(c *vmm.Config) { c.Arch = "arm64" }, plan: func(p *Plan) { p.Machine = MachineMicrovm }, want: "not supported"},
		{name: "no binary", plan: func(p *Plan) { p.Binary = "" }, want: "binary"},
		{name: "unknown accel", plan: func(p *Plan) { p.Accel = "xen" }, want: "accelerator"},
		{name: "unknown transport", plan: func(p *Plan) { p.Transport = "tcp" }, want: "transport"},
		{name: "vsock without cid", plan: func(p *Plan) { p.Transport = TransportVsock }, want: "cid"},
		{name: "vsock reserved cid", plan: func(p *Plan) { p.Transport, p.CID = TransportVsock, 2 }, want: "cid"},
		{name: "unknown format", cfg: func(c *vmm.Config) { c.Disks[0].Format = "raw,file.locking=off" }, want: "format"},
		{name: "serial with a comma", cfg: func(c *vmm.Config) { c.Disks[0].Serial = "a,b" }, want: "serial"},
		{name: "serial too long", cfg: func(c *vmm.Config) { c.Disks[0].Serial = strings.Repeat("s", 21) }, want: "serial"},
		{name: "newline in kernel path", cfg: func(c *vmm.Config) { c.Kernel = "/a\nb" }, want: "kernel"},
		{name: "state dir too long for sockets", cfg: func(c *vmm.Config) { c.StateDir = "/" + strings.Repeat("d", 100) }, want: "too long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			plan := base
			if tc.plan != nil {
				tc.plan(&plan)
			}
			_, err := BuildArgv(&cfg, plan)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("BuildArgv error = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}
