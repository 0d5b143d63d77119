package pm_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// Every package says in its package doc what it owns.
func TestEveryPackageHasADoc(t *testing.T) {
	dirs := map[string]bool{} // dir → has a package doc
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != "." && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "tools" || name == "bin" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		dir := filepath.Dir(path)
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.PackageClauseOnly|parser.ParseComments)
		if err != nil {
			return err
		}
		dirs[dir] = dirs[dir] || (f.Doc != nil && strings.TrimSpace(f.Doc.Text()) != "")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for dir, ok := range dirs {
		if !ok {
			t.Errorf("package in %s has no package doc", dir)
		}
	}
}

// node, repo, pubsub and quota never import each other (nor does the domain
// import any of them): cmd/ wires them through the interfaces node declares.
func TestLayersDoNotImportEachOther(t *testing.T) {
	const module = "github.com/pmhq/pm/"
	forbidden := map[string][]string{
		".":       {"node", "repo", "pubsub", "quota", "client", "migrations", "web"},
		"node":    {"repo", "pubsub", "quota", "client", "web"},
		"repo":    {"node", "pubsub", "quota", "client", "web"},
		"pubsub":  {"node", "repo", "quota", "client", "web"},
		"quota":   {"node", "repo", "pubsub", "client", "web"},
		"client":  {"node", "repo", "pubsub", "quota", "web"},
		"web":     {"node", "repo", "pubsub", "quota", "client", "migrations"},
		"tracing": {"node", "repo", "pubsub", "quota", "client", "migrations", "web"},
		// A module of its own that holds tests only: its non-test code
		// imports nothing of pm's.
		"deploy": {"node", "repo", "pubsub", "quota", "client", "migrations", "web", "cmd", "proto", "position"},
	}
	for dir, banned := range forbidden {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, file := range files {
			if strings.HasSuffix(file, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(token.NewFileSet(), file, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range f.Imports {
				path := strings.Trim(imp.Path.Value, `"`)
				for _, b := range banned {
					if path == module+b || strings.HasPrefix(path, module+b+"/") {
						t.Errorf("%s imports %s", file, path)
					}
				}
			}
		}
	}
}

// The board's bundle (package web) is wired into a node by the commands and
// the test harness only: node serves whatever fs.FS it is given.
func TestOnlyCommandsWireTheBoard(t *testing.T) {
	const web = "github.com/pmhq/pm/web"
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "node_modules" || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		dir := filepath.ToSlash(filepath.Dir(path))
		for _, imp := range f.Imports {
			if strings.Trim(imp.Path.Value, `"`) == web && !strings.HasPrefix(dir, "cmd/") && dir != "node/nodetest" {
				t.Errorf("%s imports %s: only cmd/ and node/nodetest wire the board", path, web)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
