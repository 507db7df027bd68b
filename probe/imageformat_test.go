package probe

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestImageFormat(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed (apt-get install qemu-utils)")
	}
	dir := t.TempDir()
	for _, tc := range []struct{ create, want string }{
		{"qcow2", "qcow2"}, {"vmdk", "vmdk"}, {"vdi", "vdi"}, {"vhdx", "vhdx"}, {"raw", "raw"},
	} {
		// The name lies about the format: detection is by content only.
		img := filepath.Join(dir, "disk-"+tc.create+".qcow2")
		if out, err := exec.Command("qemu-img", "create", "-q", "-f", tc.create, img, "16M").CombinedOutput(); err != nil {
			t.Fatalf("qemu-img create -f %s: %v\n%s", tc.create, err, out)
		}
		f, err := os.Open(img)
		if err != nil {
			t.Fatal(err)
		}
		if got := ImageFormat(f); got != tc.want {
			t.Errorf("%s image detected as %s", tc.create, got)
		}
		f.Close()
	}
	if got := ImageFormat(strings.NewReader("")); got != "raw" {
		t.Errorf("empty: %s", got)
	}
}
