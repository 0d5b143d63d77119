// Package web holds the browser board's built bundle.
//
// The board's sources and build live beside this file; the build writes
// dist/: index.html, and under assets/ the scripts, styles and other files
// it loads, each with a hash of its content in its name. pm-node embeds
// dist/ and serves it at / (node.Config.Assets).
package web

import (
	"embed"
	"io/fs"
)

//go:embed all:dist
var dist embed.FS

// Dist is the built bundle: index.html and assets/ at its root.
var Dist fs.FS = mustSub(dist, "dist")

func mustSub(f fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil { // cannot happen: dir is a valid path
		panic(err)
	}
	return sub
}
