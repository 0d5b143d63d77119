package node_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/uuid"

	"github.com/pmhq/pm/node"
	"github.com/pmhq/pm/node/nodetest"
)

const boardCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

var testBundle = fstest.MapFS{
	"index.html":                  {Data: []byte(`<!doctype html><script type="module" src="/assets/index-B1x2y3z4.js"></script>`)},
	"assets/index-B1x2y3z4.js":    {Data: []byte(`console.log("board")`)},
	"assets/index-C5d6e7f8.css":   {Data: []byte(`body{margin:0}`)},
	"assets/logo-D9e8f7a6.svg":    {Data: []byte(`<svg xmlns="http://www.w3.org/2000/svg"/>`)},
	"assets/inter-E1f2a3b4.woff2": {Data: []byte("wOF2")},
	"favicon.svg":                 {Data: []byte(`<svg xmlns="http://www.w3.org/2000/svg"/>`)},
	".vite/manifest.json":         {Data: []byte(`{}`)},
}

// fetch does one request on a fresh connection and returns the response
// with its body read.
func fetch(t *testing.T, method, url string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
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

// wantBoardHeaders checks the headers every board response carries.
func wantBoardHeaders(t *testing.T, what string, resp *http.Response) {
	t.Helper()
	for name, want := range map[string]string{
		"Content-Security-Policy": boardCSP,
		"X-Content-Type-Options":  "nosniff",
		"Referrer-Policy":         "no-referrer",
	} {
		if got := resp.Header.Get(name); got != want {
			t.Errorf("%s: %s = %q, want %q", what, name, got, want)
		}
	}
}

// The board is served at / and /assets/: the right types, index.html never
// cached unchecked, hashed assets cached for good, a strict policy on every
// response, HEAD and conditional requests, 404 for anything else.
func TestBoardServesTheBundle(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{Configure: func(cfg *node.Config) { cfg.Assets = testBundle }})
	base := c.Nodes[0].HTTPURL()
	const noCache, immutable = "no-cache", "public, max-age=31536000, immutable"
	for _, tt := range []struct {
		path, contentType, cache, body string
	}{
		{"/", "text/html; charset=utf-8", noCache, string(testBundle["index.html"].Data)},
		{"/?project=x", "text/html; charset=utf-8", noCache, string(testBundle["index.html"].Data)},
		{"/index.html", "text/html; charset=utf-8", noCache, string(testBundle["index.html"].Data)},
		{"/favicon.svg", "image/svg+xml", noCache, string(testBundle["favicon.svg"].Data)},
		{"/assets/index-B1x2y3z4.js", "text/javascript; charset=utf-8", immutable, `console.log("board")`},
		{"/assets/index-C5d6e7f8.css", "text/css; charset=utf-8", immutable, `body{margin:0}`},
		{"/assets/logo-D9e8f7a6.svg", "image/svg+xml", immutable, string(testBundle["assets/logo-D9e8f7a6.svg"].Data)},
		{"/assets/inter-E1f2a3b4.woff2", "font/woff2", immutable, "wOF2"},
	} {
		t.Run("GET "+tt.path, func(t *testing.T) {
			resp, body := fetch(t, http.MethodGet, base+tt.path, nil)
			if resp.StatusCode != http.StatusOK || body != tt.body {
				t.Fatalf("%d %q, want 200 %q", resp.StatusCode, body, tt.body)
			}
			if got := resp.Header.Get("Content-Type"); got != tt.contentType {
				t.Errorf("Content-Type = %q, want %q", got, tt.contentType)
			}
			if got := resp.Header.Get("Cache-Control"); got != tt.cache {
				t.Errorf("Cache-Control = %q, want %q", got, tt.cache)
			}
			wantBoardHeaders(t, tt.path, resp)
			etag := resp.Header.Get("ETag")
			if !strings.HasPrefix(etag, `"`) || len(etag) < 10 {
				t.Fatalf("ETag = %q, want a strong validator", etag)
			}
			again, body := fetch(t, http.MethodGet, base+tt.path, http.Header{"If-None-Match": {etag}})
			if again.StatusCode != http.StatusNotModified || body != "" {
				t.Errorf("If-None-Match: %d %q, want 304", again.StatusCode, body)
			}
			head, body := fetch(t, http.MethodHead, base+tt.path, nil)
			if head.StatusCode != http.StatusOK || body != "" || head.ContentLength != int64(len(tt.body)) ||
				head.Header.Get("Content-Type") != tt.contentType || head.Header.Get("Cache-Control") != tt.cache {
				t.Errorf("HEAD: %d, %d bytes announced, %q, %q, body %q", head.StatusCode, head.ContentLength,
					head.Header.Get("Content-Type"), head.Header.Get("Cache-Control"), body)
			}
			wantBoardHeaders(t, "HEAD "+tt.path, head)
		})
	}
	for _, path := range []string{
		"/nope", "/projects/123", "/assets/", "/assets/missing-12345678.js", "/assets", "/index.htm",
		"/.vite/manifest.json", "/assets/../.vite/manifest.json", "/%2e%2e/etc/passwd", "/readyz-not",
	} {
		t.Run("404 "+path, func(t *testing.T) {
			resp, body := fetch(t, http.MethodGet, base+path, nil)
			if resp.StatusCode != http.StatusNotFound || strings.Contains(body, "<script") {
				t.Fatalf("%d %q, want 404 without the board", resp.StatusCode, body)
			}
			wantBoardHeaders(t, path, resp)
		})
	}
	if resp, _ := fetch(t, http.MethodPost, base+"/", nil); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %d, want 405", resp.StatusCode)
	}
	// The WebSocket endpoint is unchanged.
	nodetest.Dial(t, c.Nodes[0].URL(), c.Token("acme", uuid.New())).Close()
}

// Without Assets a node serves no board.
func TestNoBoardWithoutAssets(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{})
	for _, path := range []string{"/", "/assets/index-B1x2y3z4.js"} {
		if resp, _ := fetch(t, http.MethodGet, c.Nodes[0].HTTPURL()+path, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, resp.StatusCode)
		}
	}
}

// A bundle without index.html is a broken build: the node refuses it.
func TestBoardNeedsAnIndex(t *testing.T) {
	auth, err := node.NewAuthenticator(t.Context(), node.AuthConfig{HMACSecret: []byte("secret")})
	if err != nil {
		t.Fatal(err)
	}
	_, err = node.New(node.Config{Store: struct{ node.Store }{}, Fanout: struct{ node.Fanout }{}, Auth: auth,
		Assets: fstest.MapFS{"assets/index-B1x2y3z4.js": {Data: []byte("x")}}})
	if err == nil || !strings.Contains(err.Error(), "index.html") {
		t.Fatalf("New with a bundle without index.html: %v", err)
	}
}

// The bundle pm-node embeds (web.Dist), through a real node: the page and
// every asset it names.
func TestBoardEmbeddedBundle(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{Board: true})
	base := c.Nodes[0].HTTPURL()
	resp, index := fetch(t, http.MethodGet, base+"/", nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" || !strings.Contains(index, "<html") {
		t.Fatalf("GET /: %d %q %.80q", resp.StatusCode, resp.Header.Get("Content-Type"), index)
	}
	wantBoardHeaders(t, "/", resp)
	assets := regexp.MustCompile(`(?:src|href)="(/assets/[^"]+)"`).FindAllStringSubmatch(index, -1)
	if len(assets) == 0 {
		t.Fatalf("index.html names no asset under /assets/:\n%s", index)
	}
	for _, m := range assets {
		resp, _ := fetch(t, http.MethodGet, base+m[1], nil)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Cache-Control") != "public, max-age=31536000, immutable" {
			t.Errorf("GET %s: %d, Cache-Control %q", m[1], resp.StatusCode, resp.Header.Get("Cache-Control"))
		}
		wantBoardHeaders(t, m[1], resp)
	}
}

// The page at http://host:port/ opens ws://host:port/ws: its Origin is the
// address the browser used, and the default same-host rule admits it, on a
// node directly and through a proxy that keeps the Host header (as HAProxy
// does), where Host is the proxy's address. Other origins are refused.
func TestBoardOriginIsAdmitted(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{Board: true})
	n := c.Nodes[0]
	target, err := url.Parse(n.HTTPURL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := httptest.NewServer(httputil.NewSingleHostReverseProxy(target))
	t.Cleanup(proxy.Close)
	direct, viaProxy := n.HTTPURL(), proxy.URL
	token := c.Token("acme", uuid.New())
	for _, tt := range []struct {
		name, ws, origin string
		status           int
	}{
		{"page from the node", direct, direct, http.StatusSwitchingProtocols},
		{"page through the proxy", viaProxy, viaProxy, http.StatusSwitchingProtocols},
		{"the node's origin through the proxy", viaProxy, direct, http.StatusForbidden},
		{"the proxy's origin at the node", direct, viaProxy, http.StatusForbidden},
		{"another site", viaProxy, "http://evil.example", http.StatusForbidden},
		{"another port", direct, "http://127.0.0.1:1", http.StatusForbidden},
		{"https page of the same host (TLS ends at a proxy)", direct, "https://" + strings.TrimPrefix(direct, "http://"), http.StatusSwitchingProtocols},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// The page loads from the origin's address first, as a browser's would.
			if tt.status == http.StatusSwitchingProtocols {
				if resp, _ := fetch(t, http.MethodGet, tt.ws+"/", nil); resp.StatusCode != http.StatusOK {
					t.Fatalf("GET %s/: %d", tt.ws, resp.StatusCode)
				}
			}
			wsURL := "ws" + strings.TrimPrefix(tt.ws, "http") + "/ws?access_token=" + url.QueryEscape(token)
			conn, resp, err := nodetest.TryDial(t, wsURL, http.Header{"Origin": {tt.origin}})
			if tt.status == http.StatusSwitchingProtocols {
				if err != nil {
					t.Fatalf("upgrade refused: %v (%v)", err, resp)
				}
				conn.Close()
				return
			}
			if err == nil || resp == nil || resp.StatusCode != tt.status {
				t.Fatalf("want HTTP %d, got %v (%v)", tt.status, resp, err)
			}
		})
	}
}

// With a token endpoint, the page names it in a meta element (escaped) and
// its policy's connect-src admits the endpoint's origin, on every board
// response; a path on the board's own host needs no more than 'self'.
func TestBoardTokenURL(t *testing.T) {
	for _, tt := range []struct {
		tokenURL, meta, csp string
	}{
		{
			"https://id.example.test:8443/pm/token?aud=pm&next=<x>",
			`<meta name="pm-token-url" content="https://id.example.test:8443/pm/token?aud=pm&amp;next=&lt;x&gt;">`,
			strings.Replace(boardCSP, "connect-src 'self'", "connect-src 'self' https://id.example.test:8443", 1),
		},
		{"/auth/token", `<meta name="pm-token-url" content="/auth/token">`, boardCSP},
	} {
		t.Run(tt.tokenURL, func(t *testing.T) {
			c := nodetest.Start(t, nodetest.Options{Board: true, Configure: func(cfg *node.Config) { cfg.BoardTokenURL = tt.tokenURL }})
			base := c.Nodes[0].HTTPURL()
			resp, index := fetch(t, http.MethodGet, base+"/", nil)
			head, _, _ := strings.Cut(index, "</head>")
			if resp.StatusCode != http.StatusOK || !strings.Contains(head, tt.meta) {
				t.Fatalf("GET /: %d, head without %s:\n%s", resp.StatusCode, tt.meta, index)
			}
			js := regexp.MustCompile(`src="(/assets/[^"]+)"`).FindStringSubmatch(index)
			if js == nil {
				t.Fatalf("index.html names no script:\n%s", index)
			}
			asset, _ := fetch(t, http.MethodGet, base+js[1], nil)
			for what, r := range map[string]*http.Response{"/": resp, js[1]: asset} {
				if got := r.Header.Get("Content-Security-Policy"); got != tt.csp {
					t.Errorf("%s: Content-Security-Policy = %q, want %q", what, got, tt.csp)
				}
			}
		})
	}
}

// A token URL the page could not use, or that would widen its policy in
// ways not meant, is refused at start, as is a page without a head to name
// it in.
func TestBoardTokenURLRefusals(t *testing.T) {
	auth, err := node.NewAuthenticator(t.Context(), node.AuthConfig{HMACSecret: []byte("secret")})
	if err != nil {
		t.Fatal(err)
	}
	withHead := fstest.MapFS{"index.html": {Data: []byte("<!doctype html><head><title>pm</title></head>")}}
	for _, tt := range []struct {
		tokenURL string
		assets   fstest.MapFS
		want     string
	}{
		{"ftp://id.example.test/token", withHead, "want an http(s) URL"},
		{"javascript:alert(1)", withHead, "want an http(s) URL"},
		{"https://user:pw@id.example.test/token", withHead, "want an http(s) URL"},
		{"https:///token", withHead, "want an http(s) URL"},
		{"auth/token", withHead, "want an http(s) URL"},
		{"//id.example.test/token", withHead, "want an http(s) URL"},
		{"https://id.example.test/token#x", withHead, "want an http(s) URL"},
		{"https://id.example.test/token", testBundle, "no </head>"},
	} {
		_, err := node.New(node.Config{Store: struct{ node.Store }{}, Fanout: struct{ node.Fanout }{}, Auth: auth,
			Assets: tt.assets, BoardTokenURL: tt.tokenURL})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("token URL %q: %v; want an error saying %q", tt.tokenURL, err, tt.want)
		}
	}
}
