package probe

import (
	"os"
	"testing"
)

// TestMain makes a panicking prober fail the tests (and the fuzz targets)
// instead of being counted as "not found".
func TestMain(m *testing.M) {
	recoverPanics = false
	os.Exit(m.Run())
}
