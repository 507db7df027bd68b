package secret

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestPassphraseSources(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte("from file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	type ask struct {
		dev     string
		attempt int
		want    string
		wantErr bool
	}
	for _, tc := range []struct {
		name string
		src  Source
		env  map[string]string
		asks []ask
	}{
		{"key file wins", Source{KeyFile: keyFile}, map[string]string{"QMOUNT_PASSPHRASE": "env"},
			[]ask{{"qmount0", 1, "from file", false}, {"qmount0", 2, "", true}}},
		{"one for all", Source{}, map[string]string{"QMOUNT_PASSPHRASE": "all"},
			[]ask{{"qmount0", 1, "all", false}, {"qmount1", 1, "all", false}}},
		{"numbered by order asked", Source{}, map[string]string{"QMOUNT_PASSPHRASE": "all", "QMOUNT_PASSPHRASE2": "second"},
			[]ask{{"qmount3", 1, "all", false}, {"qmount1", 1, "second", false}, {"qmount3", 1, "all", false}}},
		{"nothing and no terminal", Source{}, nil, []ask{{"qmount0", 1, "", true}}},
		{"missing key file", Source{KeyFile: keyFile + ".nope"}, nil, []ask{{"qmount0", 1, "", true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.src
			s.Getenv = func(k string) string { return tc.env[k] }
			for _, a := range tc.asks {
				got, err := s.Passphrase(context.Background(), a.dev, "LUKS2", a.attempt)
				if (err != nil) != a.wantErr || got != a.want {
					t.Errorf("%s attempt %d: got %q, %v; want %q (error %v)", a.dev, a.attempt, got, err, a.want, a.wantErr)
				}
			}
		})
	}
	s := Source{Getenv: func(string) string { return "" }}
	if _, err := s.Passphrase(context.Background(), "qmount0", "LUKS1", 1); !errors.Is(err, ErrNoPassphrase) {
		t.Errorf("got %v, want ErrNoPassphrase", err)
	}
}

func TestIsTerminalOnAFile(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "x")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if IsTerminal(f) {
		t.Error("a regular file is a terminal")
	}
}
