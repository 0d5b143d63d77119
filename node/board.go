package node

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
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
	files map[string]*boardFile // by path in the bundle
}

type boardFile struct {
	content     []byte
	contentType string
	cache       string
	etag        string
}

// newBoard reads a bundle. Files and folders whose names start with a dot
// (e.g. a build manifest in .vite/) are not served. A bundle without
// index.html is refused.
func newBoard(assets fs.FS) (*board, error) {
	b := &board{files: make(map[string]*boardFile)}
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

// ServeHTTP serves GET and HEAD requests, conditional ones too.
func (b *board) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", BoardPolicy)
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
