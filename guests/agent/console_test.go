package agent

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/qmount/qmount/internal/wire"
)

func TestConsoleHandler(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(NewConsoleHandler(&buf, slog.LevelInfo))
	log.Debug("hidden")
	log.Info("started", "kernel", "6.1.0-31-amd64", "ms", 812)
	log.With("dev", "/dev/vda").WithGroup("m").Warn("mount failed", "err", "bad superblock")
	log.Error("x", slog.Group("g", "a", 1), "empty", "")
	want := `qmount-init: started kernel=6.1.0-31-amd64 ms=812
qmount-init: WARN mount failed dev=/dev/vda m.err="bad superblock"
qmount-init: ERROR x g.a=1 empty=""
`
	if buf.String() != want {
		t.Errorf("console:\n%s\nwant:\n%s", buf.String(), want)
	}
}

func TestFormatTimeline(t *testing.T) {
	got := FormatTimeline(wire.Timeline{Init: 410, Modules: 520, Connected: 600, Mounted: 700, Serving: 705})
	want := "timeline init=410 modules=520 connected=600 mounted=700 serving=705 (ms)"
	if got != want {
		t.Errorf("FormatTimeline = %q, want %q", got, want)
	}
	var buf bytes.Buffer
	slog.New(NewConsoleHandler(&buf, nil)).Info(got)
	if !strings.HasPrefix(buf.String(), "qmount-init: timeline init=410 ") {
		t.Errorf("console line %q", buf.String())
	}
}

func TestParseFilesystems(t *testing.T) {
	in := "nodev\tsysfs\nnodev\ttmpfs\n\text4\n\tvfat\nnodev\tfuse\n\tfuseblk\n\n"
	got, err := ParseFilesystems(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "ext4,vfat,fuseblk" {
		t.Errorf("ParseFilesystems = %v", got)
	}
}
