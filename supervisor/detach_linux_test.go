package supervisor

import "testing"

func TestUnescapeMount(t *testing.T) {
	if got := unescapeMount(`/run/a\040b\134c`); got != `/run/a b\c` {
		t.Errorf("unescapeMount = %q", got)
	}
}
