package e2e

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pmhq/pm/client"
)

// No log line carries a token. Browsers cannot set headers on a WebSocket,
// so they pass their JWT as ?access_token=: neither HAProxy (which logs
// each request) nor a node may write it down, whether the token is taken
// (101) or refused (401), with the nodes logging at debug level.
func TestTokensStayOutOfLogs(t *testing.T) {
	if why := haproxyMissing(); why != "" {
		missing(t, why)
	}
	c := startCluster(t, options{nodes: 1, lb: true, env: []string{"PM_LOG_LEVEL=debug"}})
	u := newUser(newTenant(), "alice")
	valid := c.token(u)
	forged, err := client.NewToken([]byte("not the cluster's secret"), u.tenant, u.id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for token, want := range map[string]int{valid: http.StatusSwitchingProtocols, forged: http.StatusUnauthorized} {
		if got := upgradeStatus(t, c.URL()+"?access_token="+url.QueryEscape(token), ""); got != want {
			t.Fatalf("upgrade with ?access_token=: HTTP %d, want %d", got, want)
		}
	}
	// HAProxy logs a WebSocket when it ends: wait for both lines.
	eventually(t, 10*time.Second, func() bool { return strings.Count(c.lb.out.String(), "/ws") >= 2 }, "HAProxy logs both requests")

	logs := map[string]string{"haproxy": c.lb.out.String()}
	for _, n := range c.nodes {
		logs[n.id] = n.out.String()
	}
	// Even a failure report shows no token.
	redact := strings.NewReplacer(valid, "<valid token>", forged, "<forged token>")
	for name, token := range map[string]string{"valid": valid, "forged": forged} {
		signature := token[strings.LastIndexByte(token, '.')+1:]
		for proc, out := range logs {
			for line := range strings.Lines(out) {
				if strings.Contains(line, signature) {
					t.Errorf("%s's log carries the %s token (or its signature): %s", proc, name, redact.Replace(strings.TrimSpace(line)))
				}
			}
		}
	}
	// What HAProxy does log of a request: its method, path and version.
	for line := range strings.Lines(logs["haproxy"]) {
		if strings.Contains(line, "/ws") && !strings.Contains(line, `"GET /ws HTTP/1.1"`) {
			t.Errorf("HAProxy's request line is not the path alone: %s", redact.Replace(strings.TrimSpace(line)))
		}
	}
}
