package node

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"html"
	"io/fs"
	"mime"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"
)

// BoardPolicy is the Content-Security-Policy of every board response: the
// page loads only its own scripts, styles, images (and data: URLs), fonts
// and connections — connect-src 'self' admits the WebSocket to the same
// host and port, ws: from an http: page and wss: from an https: one — and
// nothing may frame it, change its base URL or receive a form from it.
const BoardPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Cache-Control of board files: index.html and the other files at the
// bundle's root are revalidated on every use (a new build shows at the next
// load); files under assets/ carry a hash of their content in their names,
// so a name never changes its content and is cached for good.
const (
	cacheRevalidate = "no-cache"
	cacheImmutable  = "public, max-age=31536000, immutable"
)

// board serves a built bundle: / is index.html, and every other file is
// served at its own path; anything else is 404 (the board routes in the URL
// fragment, so no deep link needs index.html). Files are read into memory
// once, with a strong ETag each.
type board struct {
	files  map[string]*boardFile // by path in the bundle
	policy string                // the Content-Security-Policy
}

type boardFile struct {
	content     []byte
	contentType string
	cache       string
	etag        string
}

// boardPolicy is BoardPolicy with connect-src admitting the token
// endpoint's origin too, when it is on another one.
func boardPolicy(tokenOrigin string) string {
	if tokenOrigin == "" {
		return BoardPolicy
	}
	return strings.Replace(BoardPolicy, "connect-src 'self'", "connect-src 'self' "+tokenOrigin, 1)
}

// checkTokenURL checks Config.BoardTokenURL and returns the origin the
// page's policy must admit for it: "" for a path on the board's own host.
func checkTokenURL(raw string) (origin string, err error) {
	if strings.HasPrefix(raw, "/") && !strings.HasPrefix(raw, "//") {
		if _, err := url.ParseRequestURI(raw); err != nil {
			return "", fmt.Errorf("board token URL %q: %w", raw, err)
		}
		return "", nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("board token URL %q: %w", raw, err)
	}
	if u.Scheme != "https" && u.Scheme != "http" || u.Host == "" || u.User != nil || u.Fragment != "" {
		return "", fmt.Errorf("board token URL %q: want an http(s) URL without user info or fragment, or a path on the board's host (/…)", raw)
	}
	origin = u.Scheme + "://" + u.Host
	if strings.ContainsAny(origin, " ;,'\"") {
		return "", fmt.Errorf("board token URL %q: the host has characters a URL's origin cannot have", raw)
	}
	return origin, nil
}

// tokenURLMeta is the tag that tells the page where to fetch tokens: a meta
// element, which the page's policy (no inline script) lets it read.
func tokenURLMeta(tokenURL string) []byte {
	return []byte(`<meta name="pm-token-url" content="` + html.EscapeString(tokenURL) + `">`)
}

// newBoard reads a bundle. Files and folders whose names start with a dot
// (e.g. a build manifest in .vite/) are not served. A bundle without
// index.html is refused. With a token URL, index.html names it to the page
// (in the head) and the policy admits it.
func newBoard(assets fs.FS, tokenURL string) (*board, error) {
	b := &board{files: make(map[string]*boardFile), policy: BoardPolicy}
	if tokenURL != "" {
		origin, err := checkTokenURL(tokenURL)
		if err != nil {
			return nil, err
		}
		b.policy = boardPolicy(origin)
	}
	err := fs.WalkDir(assets, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if name != "." && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		content, err := fs.ReadFile(assets, name)
		if err != nil {
			return err
		}
		if name == "index.html" && tokenURL != "" {
			content, err = injectHead(content, tokenURLMeta(tokenURL))
			if err != nil {
				return err
			}
		}
		sum := sha256.Sum256(content)
		f := &boardFile{
			content:     content,
			contentType: contentType(name),
			cache:       cacheRevalidate,
			etag:        `"` + hex.EncodeToString(sum[:16]) + `"`,
		}
		if strings.HasPrefix(name, "assets/") {
			f.cache = cacheImmutable
		}
		b.files[name] = f
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the board's bundle: %w", err)
	}
	if b.files["index.html"] == nil {
		return nil, errors.New("the board's bundle has no index.html")
	}
	return b, nil
}

// injectHead puts tag at the end of the page's head.
func injectHead(page, tag []byte) ([]byte, error) {
	i := bytes.Index(bytes.ToLower(page), []byte("</head>"))
	if i < 0 {
		return nil, errors.New("the board's index.html has no </head> to name the token URL in")
	}
	return slices.Concat(page[:i], tag, []byte("\n"), page[i:]), nil
}

// ServeHTTP serves GET and HEAD requests, conditional ones too.
func (b *board) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", b.policy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	name := strings.TrimPrefix(r.URL.Path, "/")
	if name == "" {
		name = "index.html"
	}
	f := b.files[name]
	if f == nil {
		http.NotFound(w, r)
		return
	}
	h.Set("Content-Type", f.contentType)
	h.Set("Cache-Control", f.cache)
	h.Set("ETag", f.etag)
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(f.content))
}

// contentTypes are the types of the files a web build makes, fixed here
// rather than read from the host's MIME tables.
var contentTypes = map[string]string{
	".html":        "text/html; charset=utf-8",
	".js":          "text/javascript; charset=utf-8",
	".mjs":         "text/javascript; charset=utf-8",
	".css":         "text/css; charset=utf-8",
	".json":        "application/json",
	".map":         "application/json",
	".webmanifest": "application/manifest+json",
	".txt":         "text/plain; charset=utf-8",
	".svg":         "image/svg+xml",
	".png":         "image/png",
	".jpg":         "image/jpeg",
	".jpeg":        "image/jpeg",
	".gif":         "image/gif",
	".webp":        "image/webp",
	".avif":        "image/avif",
	".ico":         "image/x-icon",
	".woff2":       "font/woff2",
	".woff":        "font/woff",
	".ttf":         "font/ttf",
	".otf":         "font/otf",
	".wasm":        "application/wasm",
}

func contentType(name string) string {
	ext := strings.ToLower(path.Ext(name))
	if t, ok := contentTypes[ext]; ok {
		return t
	}
	if t := mime.TypeByExtension(ext); t != "" {
		return t
	}
	return "application/octet-stream"
}
