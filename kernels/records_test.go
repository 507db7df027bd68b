package kernels

import (
	"slices"
	"testing"
)

func TestParseRecords(t *testing.T) {
	out := []byte(`Package: cryptsetup-bin
Version: 2:2.6.1-4~deb12u2
Architecture: arm64
Depends: libc6 (>= 2.34), libcryptsetup12 (>= 2:2.6.1) | libcryptsetup-alt, libpopt0:arm64 (>= 1.14)
Pre-Depends: dpkg (>= 1.19)
Filename: pool/main/c/cryptsetup/cryptsetup-bin_2.6.1-4~deb12u2_arm64.deb
Size: 123
SHA256: abc

Package: virtual-only

Package: libpopt0
Version: 1.19+dfsg-1
Architecture: arm64
`)
	for _, tc := range []struct {
		all      bool
		wantDeps []string
	}{
		{false, []string{"libc6", "libcryptsetup12", "libpopt0", "dpkg"}},
		{true, []string{"libc6", "libcryptsetup12", "libcryptsetup-alt", "libpopt0", "dpkg"}},
	} {
		recs := parseRecords(out, tc.all)
		if len(recs) != 2 {
			t.Fatalf("all=%v: %d records, want 2 (the one without a version skipped): %+v", tc.all, len(recs), recs)
		}
		r := recs[0]
		if r.Package != "cryptsetup-bin" || r.Version != "2:2.6.1-4~deb12u2" || r.Arch != "arm64" ||
			r.Size != "123" || r.SHA256 != "abc" || r.Filename == "" {
			t.Errorf("all=%v: record %+v", tc.all, r)
		}
		if !slices.Equal(r.Depends, tc.wantDeps) {
			t.Errorf("all=%v: depends %q, want %q", tc.all, r.Depends, tc.wantDeps)
		}
		if recs[1].Package != "libpopt0" {
			t.Errorf("second record %+v", recs[1])
		}
	}
}
