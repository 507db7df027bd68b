package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
)

// qmp is a minimal QMP client: one connection, commands one at a time,
// events handed to a callback. Safe for concurrent use.
type qmp struct {
	conn    net.Conn
	onEvent func(name string, data json.RawMessage)

	mu     sync.Mutex
	nextID int
	wait   map[int]chan qmpReply // replies awaited, by command id
	err    error                 // the reader's terminal error
	done   chan struct{}         // closed when the reader stops
}

type qmpReply struct {
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	ID    *int            `json:"id"`
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
	QMP   json.RawMessage `json:"QMP"`
}

// dialQMP connects to a QMP socket and negotiates capabilities.
func dialQMP(ctx context.Context, path string, onEvent func(string, json.RawMessage)) (*qmp, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("connecting to qmp: %w", err)
	}
	q := &qmp{conn: c, onEvent: onEvent, wait: map[int]chan qmpReply{}, done: make(chan struct{})}
	greeting := make(chan error, 1)
	go q.read(greeting)
	select {
	case err := <-greeting:
		if err != nil {
			c.Close()
			return nil, err
		}
	case <-ctx.Done():
		c.Close()
		return nil, fmt.Errorf("waiting for qmp greeting: %w", ctx.Err())
	}
	if _, err := q.Execute(ctx, "qmp_capabilities"); err != nil {
		c.Close()
		return nil, err
	}
	return q, nil
}

func (q *qmp) read(greeting chan<- error) {
	defer close(q.done)
	sc := bufio.NewScanner(q.conn)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	first := true
	fail := func(err error) {
		q.mu.Lock()
		q.err = err
		q.mu.Unlock()
		if first {
			greeting <- err
		}
	}
	for sc.Scan() {
		var r qmpReply
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			fail(fmt.Errorf("decoding qmp message: %w", err))
			return
		}
		switch {
		case first:
			first = false
			if r.QMP == nil {
				greeting <- errors.New("qmp: no greeting")
				return
			}
			greeting <- nil
		case r.Event != "":
			if q.onEvent != nil {
				q.onEvent(r.Event, r.Data)
			}
		case r.ID != nil:
			q.mu.Lock()
			w := q.wait[*r.ID]
			delete(q.wait, *r.ID)
			q.mu.Unlock()
			if w != nil {
				w <- r
			}
		}
	}
	err := sc.Err()
	if err == nil {
		err = errors.New("qmp connection closed")
	}
	fail(err)
}

// Execute runs a QMP command and returns its result.
func (q *qmp) Execute(ctx context.Context, cmd string) (json.RawMessage, error) {
	w := make(chan qmpReply, 1)
	q.mu.Lock()
	if q.err != nil {
		err := q.err
		q.mu.Unlock()
		return nil, fmt.Errorf("qmp %s: %w", cmd, err)
	}
	q.nextID++
	id := q.nextID
	q.wait[id] = w
	// One Write per command under mu: commands never interleave.
	b, _ := json.Marshal(map[string]any{"execute": cmd, "id": id})
	_, err := q.conn.Write(append(b, '\n'))
	q.mu.Unlock()
	defer func() {
		q.mu.Lock()
		delete(q.wait, id)
		q.mu.Unlock()
	}()
	if err != nil {
		return nil, fmt.Errorf("qmp %s: %w", cmd, err)
	}
	select {
	case r := <-w:
		if r.Error != nil {
			return nil, fmt.Errorf("qmp %s: %s: %s", cmd, r.Error.Class, r.Error.Desc)
		}
		return r.Return, nil
	case <-q.done:
		q.mu.Lock()
		err := q.err
		q.mu.Unlock()
		return nil, fmt.Errorf("qmp %s: %w", cmd, err)
	case <-ctx.Done():
		return nil, fmt.Errorf("qmp %s: %w", cmd, ctx.Err())
	}
}

// Close closes the connection and waits for the reader.
func (q *qmp) Close() error {
	err := q.conn.Close()
	<-q.done
	return err
}
