package p9ext

import (
	"encoding/binary"
	"reflect"
	"testing"
)

func TestExtentsName(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start uint64
		max   uint32
		ok    bool
	}{
		{ExtentsName(0, 10), 0, 10, true},
		{ExtentsName(1<<40, 4096), 1 << 40, 4096, true},
		{ExtentsPrefix + "5:999999999", 5, MaxExtents, true}, // capped
		{ExtentsPrefix + "5:0", 0, 0, false},
		{ExtentsPrefix + "x:1", 0, 0, false},
		{ExtentsPrefix + "5", 0, 0, false},
		{"user.qmount.extents:1:1", 0, 0, false},
	} {
		start, max, ok := ParseExtentsName(tc.name)
		if ok != tc.ok || (ok && (start != tc.start || max != tc.max)) {
			t.Errorf("%q: %d %d %v, want %d %d %v", tc.name, start, max, ok, tc.start, tc.max, tc.ok)
		}
	}
}

func TestExtentsRoundTrip(t *testing.T) {
	m := ExtentMap{Size: 10000, Start: 100, End: 10000, Extents: []Extent{
		{Logical: 100, Physical: 1 << 30, Length: 4000},
		{Logical: 8192, Physical: 4096, Length: 1808, Flags: ExtentUnwritten},
	}}
	b, err := EncodeExtents(&m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeExtents(b)
	if err != nil || !reflect.DeepEqual(got, m) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	empty := ExtentMap{Size: 5, End: 5, Extents: []Extent{}}
	b, _ = EncodeExtents(&empty)
	if got, err := DecodeExtents(b); err != nil || !reflect.DeepEqual(got, empty) {
		t.Fatalf("empty map: %+v, %v", got, err)
	}
}

// TestDecodeExtentsHostile: every inconsistency is refused.
func TestDecodeExtentsHostile(t *testing.T) {
	valid := func() ExtentMap {
		return ExtentMap{Size: 100, Start: 0, End: 100, Extents: []Extent{
			{Logical: 0, Physical: 0, Length: 50}, {Logical: 50, Physical: 500, Length: 50}}}
	}
	for name, mutate := range map[string]func(m *ExtentMap){
		"overlap":          func(m *ExtentMap) { m.Extents[1].Logical = 40 },
		"unsorted":         func(m *ExtentMap) { m.Extents[0], m.Extents[1] = m.Extents[1], m.Extents[0] },
		"empty extent":     func(m *ExtentMap) { m.Extents[0].Length = 0 },
		"past the end":     func(m *ExtentMap) { m.End = 90 },
		"before start":     func(m *ExtentMap) { m.Start = 10 },
		"end before start": func(m *ExtentMap) { m.Start, m.End, m.Extents = 10, 5, nil },
		"unknown flag":     func(m *ExtentMap) { m.Extents[1].Flags = 2 },
		"logical wraps":    func(m *ExtentMap) { m.Extents[1].Logical, m.Extents[1].Length, m.End = 1<<63, 1<<63+1, ^uint64(0) },
		"physical wraps":   func(m *ExtentMap) { m.Extents[1].Physical = ^uint64(0) - 10 },
	} {
		m := valid()
		mutate(&m)
		b, _ := EncodeExtents(&m)
		if _, err := DecodeExtents(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	b, _ := EncodeExtents(&ExtentMap{Size: 1, End: 1, Extents: []Extent{{Length: 1}}})
	for name, bad := range map[string][]byte{
		"short":      b[:10],
		"truncated":  b[:len(b)-1],
		"trailing":   append(append([]byte{}, b...), 0),
		"bad magic":  append([]byte("XXXX"), b[4:]...),
		"huge count": binary.LittleEndian.AppendUint32(append([]byte{}, b[:28]...), MaxExtents+1),
	} {
		if _, err := DecodeExtents(bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
