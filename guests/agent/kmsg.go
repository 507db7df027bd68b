package agent

import (
	"regexp"
	"strconv"
	"strings"
)

// KmsgRecord is one record of /dev/kmsg:
// "<prio>,<seq>,<usec>,<flags>[,...];<message>" where prio holds the
// facility (prio>>3) and level (prio&7); continuation lines (" KEY=value")
// are dropped.
type KmsgRecord struct {
	Facility int
	Level    int // 0 emerg ... 3 err, 4 warning ... 7 debug
	Seq      uint64
	Micros   uint64 // since boot
	Msg      string
}

// ParseKmsgRecord parses one record as read from /dev/kmsg (one read
// returns one record).
func ParseKmsgRecord(s string) (KmsgRecord, bool) {
	head, msg, ok := strings.Cut(s, ";")
	if !ok {
		return KmsgRecord{}, false
	}
	msg, _, _ = strings.Cut(msg, "\n")
	f := strings.Split(head, ",")
	if len(f) < 3 {
		return KmsgRecord{}, false
	}
	prio, err1 := strconv.Atoi(f[0])
	seq, err2 := strconv.ParseUint(f[1], 10, 64)
	us, err3 := strconv.ParseUint(f[2], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || prio < 0 {
		return KmsgRecord{}, false
	}
	return KmsgRecord{Facility: prio >> 3, Level: prio & 7, Seq: seq, Micros: us, Msg: msg}, true
}

// maxKernelLines bounds how many kernel lines an error message carries.
const maxKernelLines = 6

// KernelError picks, from the kernel records logged during a failed
// mount of device dev ("vda", "/dev/vda1"), the lines that explain it:
// the kernel's lines naming the device, else its error and warning lines.
// It returns at most the last few lines joined by "; ", or "" if none fits.
func KernelError(recs []KmsgRecord, dev string) string {
	dev = dev[strings.LastIndexByte(dev, '/')+1:]
	var named, loud []string
	var re *regexp.Regexp
	if dev != "" {
		re = regexp.MustCompile(`(^|[^\w])` + regexp.QuoteMeta(dev) + `($|[^\w])`)
	}
	for _, r := range recs {
		if r.Facility != 0 || strings.TrimSpace(r.Msg) == "" {
			continue // not from the kernel (e.g. systemd writing to kmsg)
		}
		msg := strings.TrimSpace(r.Msg)
		if re != nil && re.MatchString(msg) {
			named = append(named, msg)
		} else if r.Level <= 4 {
			loud = append(loud, msg)
		}
	}
	lines := named
	if len(lines) == 0 {
		lines = loud
	}
	if len(lines) > maxKernelLines {
		lines = lines[len(lines)-maxKernelLines:]
	}
	return strings.Join(lines, "; ")
}
