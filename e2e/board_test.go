package e2e

import (
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	pmnode "github.com/pmhq/pm/node"
)

// The board as a browser reaches it through HAProxy: the page and its
// assets from any node, under the board's policy, and then its WebSocket
// from the page's origin — HAProxy's address, which it passes on to the
// nodes as the Host header, so their same-host rule admits it. A page of
// another origin is refused.
func TestBoardThroughHAProxy(t *testing.T) {
	if why := haproxyMissing(); why != "" {
		missing(t, why)
	}
	c := startCluster(t, options{nodes: 2, lb: true})
	origin := "http://" + c.lb.addr
	get := func(path string) (*http.Response, string) {
		t.Helper()
		tr := &http.Transport{DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(origin + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(body)
	}
	// Twice the nodes' worth of page loads: leastconn spreads them over both.
	var index string
	for range 2 * len(c.nodes) {
		resp, body := get("/")
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Security-Policy") != pmnode.BoardPolicy ||
			resp.Header.Get("Cache-Control") != "no-cache" || !strings.Contains(body, "<html") {
			t.Fatalf("GET /: %d %v", resp.StatusCode, resp.Header)
		}
		index = body
	}
	for _, m := range regexp.MustCompile(`(?:src|href)="(/assets/[^"]+)"`).FindAllStringSubmatch(index, -1) {
		if resp, _ := get(m[1]); resp.StatusCode != http.StatusOK || resp.Header.Get("Cache-Control") != "public, max-age=31536000, immutable" {
			t.Errorf("GET %s: %d %v", m[1], resp.StatusCode, resp.Header)
		}
	}
	if resp, _ := get("/no-such-page"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /no-such-page: %d, want 404", resp.StatusCode)
	}

	u := newUser(newTenant(), "alice")
	ws := c.URL() + "?access_token=" + url.QueryEscape(c.token(u))
	for _, tt := range []struct {
		origin string
		want   int
	}{
		{origin, http.StatusSwitchingProtocols},
		{"http://" + strings.TrimPrefix(strings.TrimSuffix(c.nodes[0].URL(), "/ws"), "ws://"), http.StatusForbidden}, // a node's own address
		{"http://evil.example", http.StatusForbidden},
	} {
		if got := upgradeStatusFrom(t, ws, "", tt.origin); got != tt.want {
			t.Errorf("upgrade through HAProxy from a page of %s: HTTP %d, want %d", tt.origin, got, tt.want)
		}
	}
}
