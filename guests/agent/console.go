package agent

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
)

// ConsolePrefix starts every line the guest logs on its console, so the
// host can pick them out of the kernel's output.
const ConsolePrefix = "qmount-init: "

// ConsoleHandler is a slog.Handler writing one plain line per record:
// "qmount-init: msg k=v ..." for info, "qmount-init: WARN msg ..." for
// other levels. It is safe for concurrent use; each line is one Write.
type ConsoleHandler struct {
	mu     *sync.Mutex
	w      io.Writer
	level  slog.Leveler
	prefix string // rendered attrs from WithAttrs
	group  string
}

var _ slog.Handler = (*ConsoleHandler)(nil)

// NewConsoleHandler returns a handler writing records at level or above
// to w.
func NewConsoleHandler(w io.Writer, level slog.Leveler) *ConsoleHandler {
	if level == nil {
		level = slog.LevelInfo
	}
	return &ConsoleHandler{mu: new(sync.Mutex), w: w, level: level}
}

// Enabled implements slog.Handler.
func (h *ConsoleHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

// Handle implements slog.Handler.
func (h *ConsoleHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(ConsolePrefix)
	if r.Level != slog.LevelInfo {
		b.WriteString(strings.ToUpper(levelName(r.Level)))
		b.WriteByte(' ')
	}
	b.WriteString(r.Message)
	b.WriteString(h.prefix)
	r.Attrs(func(at slog.Attr) bool {
		writeAttr(&b, h.group, at)
		return true
	})
	b.WriteByte('\n')
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, b.String())
	return err
}

// WithAttrs implements slog.Handler.
func (h *ConsoleHandler) WithAttrs(as []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.prefix)
	for _, at := range as {
		writeAttr(&b, h.group, at)
	}
	h2 := *h
	h2.prefix = b.String()
	return &h2
}

// WithGroup implements slog.Handler.
func (h *ConsoleHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	if h.group != "" {
		h2.group = h.group + "." + name
	} else {
		h2.group = name
	}
	return &h2
}
