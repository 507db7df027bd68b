// Package wire holds the contract between the host and the guest: port
// numbers and names, disk serials, boot parameters, and the control
// protocol's messages. It is the one place both sides take them from.
//
// The control protocol is JSON lines (one Message per line, UTF-8, at most
// MaxLineBytes) over the control port. The guest speaks first:
//
//	guest -> host  {"type":"hello","version":1,...}
//	host  -> guest {"type":"mount","mount":{...}}
//	guest -> host  {"type":"log",...}*          (any time)
//	guest -> host  {"type":"mounted",...} or {"type":"error",...}
//	host  -> guest {"type":"shutdown"}
//	guest -> host  {"type":"bye"}               (synced and unmounted; powering off)
//
// While assembling a storage stack the guest may ask for a passphrase
// (several times: after a wrong one it asks again with Attempt+1):
//
//	guest -> host  {"type":"need_passphrase","device":"qmount0","kind":"LUKS2","attempt":1}
//	host  -> guest {"type":"unlock","passphrase":"..."}  (or {"type":"unlock","abort":true})
//
// Instead of mount, the host may ask the guest to run a command (qmount
// shell); its output comes back as output messages, then exited:
//
//	host  -> guest {"type":"exec","exec":{"args":["/bin/sh"],"tty":true}}
//	host  -> guest {"type":"input","data":"..."}*  ({"type":"input","eof":true} closes stdin)
//	guest -> host  {"type":"output","data":"..."}*
//	guest -> host  {"type":"exited","code":0}
//
// The guest writes hello first because, on a virtio port, reading returns
// EOF until the host side is open while writing blocks until then. When the
// control connection is lost (host crash, kill -9) the guest acts as on
// shutdown: sync, unmount, power off.
package wire

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Version is the control protocol version. A peer refuses a hello whose
// version it does not know.
const Version = 1

// Port identifies a host<->guest stream. Each has a vsock port number and a
// virtio-serial port name; the guest listens on both.
type Port struct {
	Name  string // virtio-serial port name (virtserialport name=...)
	Vsock uint32 // vsock port number
}

// The two streams between host and guest.
var (
	ControlPort = Port{Name: "qmount.ctl", Vsock: 5641}
	NinePPort   = Port{Name: "qmount.9p", Vsock: 5640}
)

// Ports lists every port, in a fixed order.
var Ports = []Port{ControlPort, NinePPort}

// PortByName returns the port with the given virtio-serial name.
func PortByName(name string) (Port, bool) {
	for _, p := range Ports {
		if p.Name == name {
			return p, true
		}
	}
	return Port{}, false
}

// DiskSerialPrefix starts the virtio-blk serial of every disk the host
// attaches; the guest finds disk i as the block device whose serial is
// DiskSerial(i).
const DiskSerialPrefix = "qmount"

// DiskSerial is the serial of the i-th disk (0-based).
func DiskSerial(i int) string { return DiskSerialPrefix + strconv.Itoa(i) }

// ParseDiskSerial returns i for DiskSerial(i).
func ParseDiskSerial(s string) (int, bool) {
	rest, ok := strings.CutPrefix(s, DiskSerialPrefix)
	if !ok || rest == "" || (len(rest) > 1 && rest[0] == '0') {
		return 0, false
	}
	i, err := strconv.Atoi(rest)
	if err != nil || i < 0 || i > 255 {
		return 0, false
	}
	return i, true
}

// Boot parameter keys on the guest kernel command line. Only non-secret,
// non-essential knobs go there: everything about the mount travels over the
// control channel.
const (
	// ParamDebug ("qmount.debug=1") makes the guest log verbosely.
	ParamDebug = "qmount.debug"
	// ParamModules ("qmount.modules=ext4,crc32c_generic") lets the host name
	// modules the guest loads before the control connection opens, so boot
	// work overlaps with the host's connection set-up.
	ParamModules = "qmount.modules"
)

// ParseCmdline returns the qmount.* parameters of a kernel command line.
func ParseCmdline(cmdline string) map[string]string {
	out := map[string]string{}
	for _, f := range strings.Fields(cmdline) {
		k, v, _ := strings.Cut(f, "=")
		if strings.HasPrefix(k, "qmount.") {
			out[k] = v
		}
	}
	return out
}

// Message types.
const (
	TypeHello    = "hello"    // guest -> host, first line
	TypeMount    = "mount"    // host -> guest
	TypeLog      = "log"      // guest -> host
	TypeMounted  = "mounted"  // guest -> host: the mount is served on the 9P port
	TypeError    = "error"    // guest -> host: a step failed; Error holds the reason
	TypeShutdown = "shutdown" // host -> guest: sync, unmount, power off
	TypeBye      = "bye"      // guest -> host: synced and unmounted

	// Storage stacks.
	TypeNeedPassphrase = "need_passphrase" // guest -> host: Device needs a passphrase
	TypeUnlock         = "unlock"          // host -> guest: Passphrase, or Abort

	// Commands (qmount shell).
	TypeExec   = "exec"   // host -> guest: run Exec
	TypeInput  = "input"  // host -> guest: Data for the command's stdin, or EOF
	TypeOutput = "output" // guest -> host: Data the command wrote
	TypeExited = "exited" // guest -> host: the command ended with Code
)

// StepUnlock is the Step of an error about a passphrase;
// ErrWrongPassphrase is its Error text when no passphrase opened the
// container.
const (
	StepUnlock         = "unlock"
	ErrWrongPassphrase = "wrong passphrase"
)

// MaxLineBytes bounds one control line in either direction.
const MaxLineBytes = 1 << 20

// Message is one control line. Fields irrelevant to Type are omitted.
type Message struct {
	Type    string `json:"type"`
	Version int    `json:"version,omitempty"`

	// hello
	Kernel string `json:"kernel,omitempty"` // guest kernel release
	Arch   string `json:"arch,omitempty"`

	// mount
	Mount *MountRequest `json:"mount,omitempty"`

	// log
	Level string `json:"level,omitempty"` // debug, info, warn, error
	Msg   string `json:"msg,omitempty"`

	// mounted
	FSType   string    `json:"fstype,omitempty"`
	ReadOnly bool      `json:"readonly,omitempty"`
	Timeline *Timeline `json:"timeline,omitempty"`
	// Extents is set when the 9P server gives extent maps (p9ext
	// EXTENTS): where the mounted device lies on which disk.
	Extents *ExtentSource `json:"extents,omitempty"`

	// error
	Step  string `json:"step,omitempty"`  // which step failed: modules, disk, mount, serve...
	Error string `json:"error,omitempty"` // human text, e.g. the kernel's own message

	// need_passphrase: Device is the disk serial (or guest device) to
	// unlock, Kind what it is ("LUKS1", "LUKS2", "BitLocker"), Attempt
	// counts from 1.
	Device  string `json:"device,omitempty"`
	Kind    string `json:"kind,omitempty"`
	Attempt int    `json:"attempt,omitempty"`

	// unlock. Passphrase is a secret: never log a Message that may hold
	// one (String redacts it).
	Passphrase string `json:"passphrase,omitempty"`
	Abort      bool   `json:"abort,omitempty"`

	// exec, input, output, exited
	Exec *ExecRequest `json:"exec,omitempty"`
	Data []byte       `json:"data,omitempty"` // base64 in JSON
	EOF  bool         `json:"eof,omitempty"`
	Code int          `json:"code,omitempty"`
}

// ExtentSource locates the guest's mounted device on one of the disks the
// host attached: Size bytes at Offset of disk number Disk (its serial is
// DiskSerial(Disk)). The host checks it against the disk it has.
type ExtentSource struct {
	Disk   int   `json:"disk"`
	Offset int64 `json:"offset"`
	Size   int64 `json:"size"`
}

// String renders m for logs with any passphrase redacted.
func (m *Message) String() string {
	c := *m
	if c.Passphrase != "" {
		c.Passphrase = "<redacted>"
	}
	b, _ := json.Marshal(&c)
	return string(b)
}

// ExecRequest is a command for the guest to run (qmount shell).
type ExecRequest struct {
	// Args is the argv; Args[0] is looked up in the guest's PATH.
	Args []string `json:"args"`
	// TTY runs the command on a pseudo-terminal of Rows x Cols (stdin,
	// stdout and stderr all on it); otherwise stdout and stderr both go
	// to output messages and stdin comes from input messages.
	TTY  bool `json:"tty,omitempty"`
	Rows int  `json:"rows,omitempty"`
	Cols int  `json:"cols,omitempty"`
	// Disks are the serials of the attached disks; the guest links
	// /dev/disk/qmount/SERIAL to each before running the command.
	Disks []string `json:"disks,omitempty"`
}

// MaxDataBytes bounds Data in one input or output message, so that a line
// stays well under MaxLineBytes after base64.
const MaxDataBytes = 64 << 10

// MountRequest says what the guest mounts.
type MountRequest struct {
	// Disks are the serials of the disks the mount uses, in order.
	Disks []string `json:"disks"`
	// Partition selects a partition of the first disk (1-based); 0 means
	// the whole disk.
	Partition int `json:"partition,omitempty"`
	// FSType is the type for mount(2) ("ext4", "ntfs3"...). Empty: detect.
	FSType string `json:"fstype,omitempty"`
	// Options are mount options as for mount -o, comma separated.
	Options  string `json:"options,omitempty"`
	ReadOnly bool   `json:"readonly,omitempty"`

	// Storage stack. The guest unlocks every LUKS or BitLocker disk it
	// finds (asking the host for passphrases) and assembles md arrays
	// whose members it finds, whatever these fields say.
	//
	// RAID says the disks are members of one md array, which is mounted
	// (assembled with --run: a degraded array is used, read-only when
	// ReadOnly).
	RAID bool `json:"raid,omitempty"`
	// VG and LV name an LVM logical volume to mount: the guest activates
	// VG from the (unlocked, assembled) disks. An empty LV with a PV found
	// mounts the VG's only LV.
	VG string `json:"vg,omitempty"`
	LV string `json:"lv,omitempty"`
}

// Timeline records guest boot milestones, in milliseconds of guest uptime
// (CLOCK_BOOTTIME), so the host can report where boot time goes.
type Timeline struct {
	Init      int64 `json:"init_ms"`      // /init started
	Modules   int64 `json:"modules_ms"`   // boot modules loaded
	Connected int64 `json:"connected_ms"` // control connection open
	Mounted   int64 `json:"mounted_ms"`   // filesystem mounted
	Serving   int64 `json:"serving_ms"`   // 9P port open, serving
}

// Validate checks the fields a message of its type needs.
func (m *Message) Validate() error {
	switch m.Type {
	case TypeHello:
		if m.Version != Version {
			return fmt.Errorf("control protocol version %d, want %d", m.Version, Version)
		}
	case TypeMount:
		if m.Mount == nil || len(m.Mount.Disks) == 0 {
			return errors.New("mount message without disks")
		}
		for _, d := range m.Mount.Disks {
			if _, ok := ParseDiskSerial(d); !ok {
				return fmt.Errorf("mount message: bad disk serial %q", d)
			}
		}
		if m.Mount.Partition < 0 {
			return fmt.Errorf("mount message: bad partition %d", m.Mount.Partition)
		}
		if strings.ContainsAny(m.Mount.FSType, ", \t\n") {
			return fmt.Errorf("mount message: bad fstype %q", m.Mount.FSType)
		}
		if m.Mount.LV != "" && m.Mount.VG == "" {
			return errors.New("mount message: LV without VG")
		}
		for _, n := range []string{m.Mount.VG, m.Mount.LV} {
			if n != "" && !ValidLVMName(n) {
				return fmt.Errorf("mount message: bad LVM name %q", n)
			}
		}
	case TypeError:
		if m.Error == "" {
			return errors.New("error message without text")
		}
	case TypeNeedPassphrase:
		if m.Device == "" || m.Attempt < 1 {
			return errors.New("need_passphrase message without device or attempt")
		}
	case TypeUnlock:
		if m.Passphrase == "" && !m.Abort {
			return errors.New("unlock message without passphrase")
		}
	case TypeExec:
		if m.Exec == nil || len(m.Exec.Args) == 0 || m.Exec.Args[0] == "" {
			return errors.New("exec message without a command")
		}
		for _, d := range m.Exec.Disks {
			if _, ok := ParseDiskSerial(d); !ok {
				return fmt.Errorf("exec message: bad disk serial %q", d)
			}
		}
	case TypeInput, TypeOutput:
		if len(m.Data) > MaxDataBytes {
			return fmt.Errorf("%s message of %d bytes is too long", m.Type, len(m.Data))
		}
	case TypeMounted:
		if x := m.Extents; x != nil && (x.Disk < 0 || x.Offset < 0 || x.Size <= 0 || x.Offset+x.Size < x.Offset) {
			return fmt.Errorf("mounted message: bad extent source %+v", *x)
		}
	case TypeLog, TypeShutdown, TypeBye, TypeExited:
	default:
		return fmt.Errorf("unknown control message type %q", m.Type)
	}
	return nil
}

// Encoder writes messages as JSON lines.
type Encoder struct{ w io.Writer }

// NewEncoder returns an Encoder writing to w.
func NewEncoder(w io.Writer) *Encoder { return &Encoder{w: w} }

// Encode writes one message as one line with one Write call.
func (e *Encoder) Encode(m *Message) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encoding %s message: %w", m.Type, err)
	}
	if len(b)+1 > MaxLineBytes {
		return fmt.Errorf("encoding %s message: line of %d bytes is too long", m.Type, len(b))
	}
	if _, err := e.w.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("writing %s message: %w", m.Type, err)
	}
	return nil
}

// Decoder reads JSON-line messages, bounding each line.
type Decoder struct{ s *bufio.Scanner }

// NewDecoder returns a Decoder reading from r.
func NewDecoder(r io.Reader) *Decoder {
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 0, 4096), MaxLineBytes)
	return &Decoder{s: s}
}

// Decode reads and validates the next message. It returns io.EOF at a clean
// end of stream.
func (d *Decoder) Decode() (*Message, error) {
	for d.s.Scan() {
		line := d.s.Bytes()
		if len(strings.TrimSpace(string(line))) == 0 {
			continue
		}
		var m Message
		if err := json.Unmarshal(line, &m); err != nil {
			return nil, fmt.Errorf("decoding control message: %w", err)
		}
		if err := m.Validate(); err != nil {
			return nil, fmt.Errorf("invalid control message: %w", err)
		}
		return &m, nil
	}
	if err := d.s.Err(); err != nil {
		return nil, fmt.Errorf("reading control message: %w", err)
	}
	return nil, io.EOF
}

// ValidLVMName reports whether s can be an LVM VG or LV name: letters,
// digits and "+_.-", not starting with "-", not "." or "..".
func ValidLVMName(s string) bool {
	if s == "" || len(s) > 127 || s[0] == '-' || s == "." || s == ".." {
		return false
	}
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '+' || c == '_' || c == '.' || c == '-':
		default:
			return false
		}
	}
	return true
}
