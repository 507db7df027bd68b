// Package secret obtains passphrases for encrypted disks: from a key file,
// from the environment (QMOUNT_PASSPHRASE, or QMOUNT_PASSPHRASE1, 2, ...
// for the first, second... encrypted disk), or from the terminal without
// echo. Passphrases are never logged; callers must not log them either.
package secret

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// EnvPassphrase is the environment variable holding a passphrase;
// EnvPassphrase+"N" holds the one of the N-th encrypted disk (1-based).
const EnvPassphrase = "QMOUNT_PASSPHRASE"

// ErrNoPassphrase is returned when no source has a passphrase and there is
// no terminal to ask on.
var ErrNoPassphrase = errors.New("a passphrase is needed: set " + EnvPassphrase + ", use --key-file, or run on a terminal")

// Source answers passphrase requests (session.Config.Passphrase).
type Source struct {
	// KeyFile, if set, is read for every container (a trailing newline
	// is stripped).
	KeyFile string
	// Getenv reads the environment (default os.Getenv).
	Getenv func(string) string
	// Terminal is the terminal to prompt on; nil means none (then a
	// wrong passphrase is final).
	Terminal *os.File

	order []string // devices in the order first asked: their index is N-1
}

// New returns a Source for keyFile (may be empty) prompting on the
// controlling terminal, if stdin is one.
func New(keyFile string) *Source {
	s := &Source{KeyFile: keyFile}
	if IsTerminal(os.Stdin) {
		s.Terminal = os.Stdin
	}
	return s
}

// Passphrase returns the passphrase for device (kind names it in the
// prompt) on attempt n. Non-interactive sources give their passphrase once;
// asking again (it was wrong) fails, so the mount exits with the guest's
// "wrong passphrase" error instead of looping.
func (s *Source) Passphrase(ctx context.Context, device, kind string, attempt int) (string, error) {
	idx := -1
	for i, d := range s.order {
		if d == device {
			idx = i
		}
	}
	if idx < 0 {
		s.order = append(s.order, device)
		idx = len(s.order) - 1
	}
	getenv := s.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	fixed, from := "", ""
	switch {
	case s.KeyFile != "":
		b, err := os.ReadFile(s.KeyFile)
		if err != nil {
			return "", fmt.Errorf("reading the key file: %w", err)
		}
		fixed, from = strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r"), "key file"
	case getenv(EnvPassphrase+strconv.Itoa(idx+1)) != "":
		fixed, from = getenv(EnvPassphrase+strconv.Itoa(idx+1)), EnvPassphrase+strconv.Itoa(idx+1)
	case getenv(EnvPassphrase) != "":
		fixed, from = getenv(EnvPassphrase), EnvPassphrase
	}
	if fixed != "" {
		if attempt > 1 {
			return "", fmt.Errorf("the passphrase from %s is wrong", from)
		}
		return fixed, nil
	}
	if s.Terminal == nil {
		return "", ErrNoPassphrase
	}
	prompt := fmt.Sprintf("Passphrase for %s (%s): ", device, kind)
	if attempt > 1 {
		prompt = "Wrong passphrase. " + prompt
	}
	return ReadPassword(s.Terminal, prompt)
}

// ReadPassword prints prompt on tty and reads a line from it with echo
// off.
func ReadPassword(tty *os.File, prompt string) (string, error) {
	// Echo goes off before the prompt shows: what is typed (or pasted)
	// as soon as it appears must not be echoed.
	restore, err := noEcho(tty)
	if err != nil {
		return "", fmt.Errorf("turning the terminal's echo off: %w", err)
	}
	if _, err := io.WriteString(tty, prompt); err != nil {
		restore()
		return "", fmt.Errorf("prompting for the passphrase: %w", err)
	}
	line, rerr := bufio.NewReader(tty).ReadString('\n')
	restore()
	io.WriteString(tty, "\n")
	if rerr != nil && line == "" {
		return "", fmt.Errorf("reading the passphrase: %w", rerr)
	}
	line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	if line == "" {
		return "", errors.New("empty passphrase")
	}
	return line, nil
}
