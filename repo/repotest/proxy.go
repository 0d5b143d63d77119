package repotest

import (
	"io"
	"net"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Proxy is a TCP proxy in front of the test Postgres server, for tests of
// what the store does while the database is out of reach, without touching
// the shared server. Up, it forwards; Down, it looks like a stopped server
// (new connections are reset at once, open ones are reset); Blackhole, like
// a hung host or a lost network (new connections are accepted and never
// answered, open ones stop carrying bytes).
type Proxy struct {
	tb     testing.TB
	ln     net.Listener
	target string

	mu    sync.Mutex
	mode  proxyMode
	conns map[net.Conn]struct{} // both ends of every open forwarding
	held  []net.Conn            // accepted in blackhole mode
	wg    sync.WaitGroup
}

type proxyMode int

const (
	proxyUp proxyMode = iota
	proxyDown
	proxyBlackhole
)

// MustProxy starts a proxy to the server of databaseURL and returns it with
// databaseURL rewritten to go through it. It stops when the test ends.
func MustProxy(tb testing.TB, databaseURL string) (*Proxy, string) {
	tb.Helper()
	cfg, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		tb.Fatalf("repotest: proxy: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("repotest: proxy: %v", err)
	}
	p := &Proxy{
		tb: tb, ln: ln, conns: make(map[net.Conn]struct{}),
		target: net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))),
	}
	u, err := url.Parse(databaseURL)
	if err != nil || u.Scheme == "" {
		ln.Close()
		tb.Fatalf("repotest: proxy: %q is not a URL: %v", databaseURL, err)
	}
	u.Host = ln.Addr().String()
	p.wg.Add(1)
	go p.accept()
	tb.Cleanup(p.close)
	return p, u.String()
}

// Down makes the proxy look like a stopped server: it resets every open
// connection and, until Up, every new one. It returns once the open ones
// are reset.
func (p *Proxy) Down() { p.set(proxyDown) }

// Blackhole makes the proxy look like a hung server: open connections stop
// carrying bytes, new ones are accepted and never answered, until Up.
func (p *Proxy) Blackhole() { p.set(proxyBlackhole) }

// Up makes the proxy forward new connections again. Connections it broke
// stay broken; those a blackhole held are reset.
func (p *Proxy) Up() { p.set(proxyUp) }

func (p *Proxy) set(m proxyMode) {
	p.mu.Lock()
	p.mode = m
	var drop []net.Conn
	if m != proxyUp {
		for c := range p.conns {
			drop = append(drop, c)
		}
		clear(p.conns)
	} else {
		drop, p.held = p.held, nil
	}
	p.mu.Unlock()
	for _, c := range drop {
		if m == proxyBlackhole {
			// Stop carrying bytes without telling either end: the
			// forwarding goroutines see the close, the peers do not.
			hold(c)
			continue
		}
		reset(c)
	}
}

// hold keeps c open but silent: reads by its forwarder end, its peer waits.
func hold(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseRead()
	}
}

// reset closes c with a TCP reset, as a server that died does.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		mode := p.mode
		if mode == proxyBlackhole {
			p.held = append(p.held, c)
		}
		p.mu.Unlock()
		switch mode {
		case proxyDown:
			reset(c)
		case proxyUp:
			p.wg.Add(1)
			go p.forward(c)
		}
	}
}

// forward connects c to the server and copies bytes both ways until either
// side ends or the proxy drops the pair.
func (p *Proxy) forward(c net.Conn) {
	defer p.wg.Done()
	s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		reset(c)
		return
	}
	p.mu.Lock()
	if p.mode != proxyUp {
		p.mu.Unlock()
		reset(c)
		reset(s)
		return
	}
	p.conns[c], p.conns[s] = struct{}{}, struct{}{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		p.mu.Lock()
		_, ours := p.conns[dst]
		p.mu.Unlock()
		if ours { // an end closed: pass it on
			if tc, ok := dst.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
			}
		}
	}
	go pipe(s, c)
	go pipe(c, s)
	wg.Wait()
	p.mu.Lock()
	_, ours := p.conns[c]
	delete(p.conns, c)
	delete(p.conns, s)
	blackholed := p.mode == proxyBlackhole && !ours
	if blackholed {
		p.held = append(p.held, c, s)
	}
	p.mu.Unlock()
	if !blackholed {
		_ = c.Close()
		_ = s.Close()
	}
}

// close stops the proxy and ends every connection.
func (p *Proxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	var all []net.Conn
	for c := range p.conns {
		all = append(all, c)
	}
	clear(p.conns)
	all = append(all, p.held...)
	p.held = nil
	p.mu.Unlock()
	for _, c := range all {
		reset(c)
	}
	p.wg.Wait()
	// Connections a blackhole took over from a forwarding that ended after
	// the list above was taken.
	p.mu.Lock()
	rest := p.held
	p.held = nil
	p.mu.Unlock()
	for _, c := range rest {
		reset(c)
	}
}
