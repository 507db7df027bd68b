package supervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Control requests.
const (
	opStatus  = "status"
	opUnmount = "unmount"
)

type request struct {
	Op string `json:"op"`
}

type response struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	State *State `json:"state,omitempty"`
}

// call sends one request to a supervisor's control socket and returns its
// answer.
func call(ctx context.Context, socket string, req request) (*response, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("connecting to the supervisor: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	b, _ := json.Marshal(req)
	if _, err := c.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("asking the supervisor to %s: %w", req.Op, err)
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("waiting for the supervisor to %s: %w", req.Op, err)
	}
	var resp response
	if err := json.Unmarshal(line, &resp); err != nil {
		return nil, fmt.Errorf("reading the supervisor's answer: %w", err)
	}
	if !resp.OK {
		if resp.Error == "" {
			resp.Error = "failed"
		}
		return &resp, errors.New(resp.Error)
	}
	return &resp, nil
}

// serveControl answers requests on ln until it is closed. unmount runs the
// clean shutdown and returns its result; status returns the current State.
func serveControl(ln net.Listener, conns *sync.WaitGroup, status func() *State, unmount func() error) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			line, err := bufio.NewReader(c).ReadBytes('\n')
			if err != nil {
				return
			}
			c.SetReadDeadline(time.Time{})
			var req request
			var resp response
			if err := json.Unmarshal(line, &req); err != nil {
				resp.Error = "bad request"
			} else {
				switch req.Op {
				case opStatus:
					resp.OK, resp.State = true, status()
				case opUnmount:
					if err := unmount(); err != nil {
						resp.Error = err.Error()
					} else {
						resp.OK = true
					}
				default:
					resp.Error = fmt.Sprintf("unknown request %q", req.Op)
				}
			}
			b, _ := json.Marshal(&resp)
			c.Write(append(b, '\n'))
		}()
	}
}
