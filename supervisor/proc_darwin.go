package supervisor

import (
	"errors"
	"os/exec"
	"strconv"
	"strings"
)

// processCmdline returns the command line of pid (from ps: words split
// on spaces, which is enough to recognise our hypervisor).
func processCmdline(pid int) ([]string, error) {
	out, err := exec.Command("ps", "-o", "command=", "-p", strconv.Itoa(pid)).Output()
	if err != nil {
		return nil, err
	}
	f := strings.Fields(string(out))
	if len(f) == 0 {
		return nil, errors.New("no such process")
	}
	return f, nil
}

func processZombie(int) bool { return false }
