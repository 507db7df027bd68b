package p9ext

import (
	"math/rand"
	"reflect"
	"testing"

	"github.com/hugelgupf/p9/p9"
)

func TestNameRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		off uint64
		max uint32
	}{{0, 1}, {42, 65536}, {^uint64(0), 1 << 20}} {
		for _, names := range []bool{false, true} {
			name := ReaddirPlusName(tc.off, tc.max)
			if names {
				name = ReaddirNamesName(tc.off, tc.max)
			}
			off, max, namesOnly, ok := ParseReaddirPlusName(name)
			if !ok || off != tc.off || max != tc.max || namesOnly != names {
				t.Errorf("ParseReaddirPlusName(%q) = %d, %d, %v, %v; want %d, %d, %v", name, off, max, namesOnly, ok, tc.off, tc.max, names)
			}
		}
	}
	for _, bad := range []string{"", "user.x", ReaddirPlusPrefix, ReaddirPlusPrefix + "1", ReaddirPlusPrefix + "x:1",
		ReaddirPlusPrefix + "1:0", ReaddirPlusPrefix + "1:-1", ReaddirPlusPrefix + "1:names", ReaddirPlusPrefix + "1:2:other"} {
		if _, _, _, ok := ParseReaddirPlusName(bad); ok {
			t.Errorf("ParseReaddirPlusName(%q) accepted", bad)
		}
	}
}

func randomEntry(r *rand.Rand, i int) Entry {
	e := Entry{
		Name:   string(rune('a'+i%26)) + "file" + string(rune('0'+i%10)),
		Offset: r.Uint64(),
		Type:   p9.TypeRegular,
		QID:    p9.QID{Type: p9.TypeRegular, Version: r.Uint32(), Path: r.Uint64()},
		Valid:  p9.AttrMaskAll,
		Attr: p9.Attr{Mode: p9.FileMode(r.Uint32()), UID: p9.UID(r.Uint32()), GID: p9.GID(r.Uint32()),
			NLink: p9.NLink(r.Uint64()), Size: r.Uint64(), MTimeSeconds: r.Uint64(), MTimeNanoSeconds: 999999999,
			DataVersion: r.Uint64()},
	}
	if i%3 == 0 {
		e.XattrsKnown = true
		e.Xattrs = []string{"user.a", "security.selinux"}
	} else if i%3 == 1 {
		e.XattrsKnown = true
	}
	return e
}

func TestBatchRoundTrip(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	enc := NewEncoder(1 << 20)
	var want []Entry
	for i := 0; i < 500; i++ {
		e := randomEntry(r, i)
		ok, err := enc.Add(e)
		if err != nil || !ok {
			t.Fatalf("Add(%d) = %v, %v", i, ok, err)
		}
		if !e.XattrsKnown {
			e.Xattrs = nil
		}
		want = append(want, e)
	}
	got, err := Decode(enc.Bytes(true))
	if err != nil {
		t.Fatal(err)
	}
	if !got.EOF || !reflect.DeepEqual(got.Entries, want) {
		t.Fatalf("round trip mismatch: eof=%v, %d entries", got.EOF, len(got.Entries))
	}
}

func TestEncoderLimit(t *testing.T) {
	r := rand.New(rand.NewSource(2))
	enc := NewEncoder(4096)
	n := 0
	for {
		ok, err := enc.Add(randomEntry(r, n))
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		n++
	}
	b := enc.Bytes(false)
	if len(b) > 4096 || n == 0 {
		t.Fatalf("batch of %d bytes with %d entries exceeds limit or is empty", len(b), n)
	}
	got, err := Decode(b)
	if err != nil || len(got.Entries) != n || got.EOF {
		t.Fatalf("Decode: %d entries, eof %v, err %v; want %d", len(got.Entries), got.EOF, err, n)
	}
}

func TestAddRejects(t *testing.T) {
	enc := NewEncoder(1 << 16)
	for _, name := range []string{"", string(make([]byte, 256))} {
		if _, err := enc.Add(Entry{Name: name}); err == nil {
			t.Errorf("Add(name of %d bytes) accepted", len(name))
		}
	}
	many := make([]string, MaxXattrNames+1)
	for i := range many {
		many[i] = "user.x"
	}
	if ok, err := enc.Add(Entry{Name: "f", XattrsKnown: true, Xattrs: many}); !ok || err != nil {
		t.Fatal(ok, err)
	}
	got, err := Decode(enc.Bytes(true))
	if err != nil || got.Entries[0].XattrsKnown {
		t.Fatalf("too many xattrs should be sent as unknown: %+v %v", got.Entries, err)
	}
}

func TestDecodeHostile(t *testing.T) {
	enc := NewEncoder(1 << 16)
	enc.Add(Entry{Name: "ok", XattrsKnown: true, Xattrs: []string{"user.x"}})
	good := enc.Bytes(true)
	cases := map[string][]byte{
		"empty":     nil,
		"magic":     append([]byte("XXXX"), good[4:]...),
		"truncated": good[:len(good)-1],
		"trailing":  append(append([]byte{}, good...), 0),
		"eofbyte":   func() []byte { b := append([]byte{}, good...); b[8] = 7; return b }(),
		"count":     func() []byte { b := append([]byte{}, good...); b[4] = 0xff; b[5] = 0xff; return b }(),
		"slash":     func() []byte { b := append([]byte{}, good...); b[headerLen+2] = '/'; return b }(),
		"dotdot":    func() []byte { b := append([]byte{}, good...); b[headerLen+2], b[headerLen+3] = '.', '.'; return b }(),
	}
	for name, b := range cases {
		if _, err := Decode(b); err == nil {
			t.Errorf("%s: Decode accepted a bad batch", name)
		}
	}
}

func FuzzDecode(f *testing.F) {
	enc := NewEncoder(1 << 16)
	enc.Add(Entry{Name: "a", XattrsKnown: true, Xattrs: []string{"user.x"}})
	enc.Add(Entry{Name: "b"})
	f.Add(enc.Bytes(true))
	f.Fuzz(func(t *testing.T, b []byte) {
		batch, err := Decode(b)
		if err != nil {
			return
		}
		for _, e := range batch.Entries {
			if !ValidName(e.Name) {
				t.Fatalf("invalid name %q accepted", e.Name)
			}
		}
	})
}

func TestTreeRoundTrip(t *testing.T) {
	name := ReaddirTreeName(7, 1<<20, 16)
	if after, max, dirs, names, ok := ParseReaddirTreeName(name); !ok || after != 7 || max != 1<<20 || dirs != 16 || names {
		t.Errorf("ParseReaddirTreeName(%q) = %d, %d, %d, %v, %v", name, after, max, dirs, names, ok)
	}
	name = ReaddirTreeNamesName(7, 1<<20, 16)
	if after, max, dirs, names, ok := ParseReaddirTreeName(name); !ok || after != 7 || max != 1<<20 || dirs != 16 || !names {
		t.Errorf("ParseReaddirTreeName(%q) = %d, %d, %d, %v, %v", name, after, max, dirs, names, ok)
	}
	for _, bad := range []string{ReaddirTreePrefix + "1:2", ReaddirTreePrefix + "1:0:3", ReaddirTreePrefix + "1:2:0", ReaddirPlusName(1, 2)} {
		if _, _, _, _, ok := ParseReaddirTreeName(bad); ok {
			t.Errorf("ParseReaddirTreeName(%q) accepted", bad)
		}
	}
	r := rand.New(rand.NewSource(2))
	te := NewTreeEncoder(1 << 20)
	var want []SubListing
	for d := 0; d < 5; d++ {
		enc := NewEncoder(1 << 20)
		var ents []Entry
		for i := 0; i < d*3; i++ {
			e := randomEntry(r, i)
			if ok, err := enc.Add(e); !ok || err != nil {
				t.Fatal(ok, err)
			}
			if !e.XattrsKnown {
				e.Xattrs = nil
			}
			ents = append(ents, e)
		}
		s := SubListing{Name: "d" + string(rune('0'+d)), Offset: uint64(d + 1),
			QID: p9.QID{Type: p9.TypeDir, Path: uint64(100 + d)}, Batch: Batch{Entries: ents, EOF: true}}
		if ok, err := te.Add(s.Name, s.Offset, s.QID, enc.Bytes(true)); !ok || err != nil {
			t.Fatal(ok, err)
		}
		want = append(want, s)
	}
	b := te.Bytes(true)
	got, err := DecodeTree(b)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Done || len(got.Subs) != len(want) {
		t.Fatalf("decoded %d listings (done %v), want %d", len(got.Subs), got.Done, len(want))
	}
	for i := range want {
		if len(want[i].Batch.Entries) == 0 {
			want[i].Batch.Entries = []Entry{}
		}
		if !reflect.DeepEqual(got.Subs[i], want[i]) {
			t.Errorf("listing %d: got %+v, want %+v", i, got.Subs[i].Name, want[i].Name)
		}
	}
	// Hostile input: every truncation and byte flip fails or decodes,
	// never panics.
	for i := 0; i < len(b); i++ {
		DecodeTree(b[:i])
		c := append([]byte(nil), b...)
		c[i] ^= 0xff
		DecodeTree(c)
	}
}
