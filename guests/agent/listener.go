package agent

import (
	"errors"
	"net"
	"sync"
)

// multiListener accepts from several listeners at once (the virtio-serial
// port and vsock: the guest serves whichever the host attached).
type multiListener struct {
	subs   []net.Listener
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
}

// MultiListener returns a listener whose Accept returns the connections of
// every one of ls, in arrival order. Close closes them all. It needs at
// least one listener.
func MultiListener(ls ...net.Listener) (net.Listener, error) {
	if len(ls) == 0 {
		return nil, errors.New("no listener to accept from")
	}
	if len(ls) == 1 {
		return ls[0], nil
	}
	m := &multiListener{subs: ls, conns: make(chan net.Conn), closed: make(chan struct{})}
	for _, l := range ls {
		m.wg.Go(func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return // closed, or broken: the others go on
				}
				select {
				case m.conns <- c:
				case <-m.closed:
					c.Close()
					return
				}
			}
		})
	}
	return m, nil
}

func (m *multiListener) Accept() (net.Conn, error) {
	select {
	case c := <-m.conns:
		return c, nil
	case <-m.closed:
		return nil, net.ErrClosed
	}
}

func (m *multiListener) Close() error {
	var errs []error
	m.once.Do(func() {
		close(m.closed)
		for _, l := range m.subs {
			if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, err)
			}
		}
	})
	return errors.Join(errs...)
}

func (m *multiListener) Addr() net.Addr { return m.subs[0].Addr() }
