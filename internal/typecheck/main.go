// Command typecheck type-checks ferry's packages and their tests for another
// GOOS, from source: the cheap cross-platform check of scripts/test.sh.
//
//	go run ./internal/typecheck -for darwin/arm64,windows/amd64 ./...
//
// It reports what `GOOS=windows go vet ./...` would fail on first: a name
// a file uses that is not defined for that GOOS, a wrong type. It does not
// run vet's analyzers and compiles nothing, so it needs no build cache:
// cross-compiling ferry's dependencies and the standard library for each
// GOOS, as go vet and go build must, took about three minutes per GOOS on
// a 2-core machine; this type-checks the dependencies' declarations only
// (their function bodies are skipped, and their errors ignored).
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// listed is what go list says of one package.
type listed struct {
	ImportPath string
	Dir        string
	GoFiles    []string
	CgoFiles   []string
	ImportMap  map[string]string
	Module     *struct {
		Main      bool
		GoVersion string
	}
	Error *struct{ Err string }
}

func main() {
	platforms := flag.String("for", "", "the GOOS/GOARCH pairs to check for, separated by commas (required)")
	flag.Parse()
	if *platforms == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: typecheck -for GOOS/GOARCH[,GOOS/GOARCH...] packages...")
		os.Exit(2)
	}
	failed := false
	for _, pl := range strings.Split(*platforms, ",") {
		goos, goarch, ok := strings.Cut(pl, "/")
		if !ok {
			fmt.Fprintf(os.Stderr, "typecheck: %q is not GOOS/GOARCH\n", pl)
			os.Exit(2)
		}
		n, err := check(goos, goarch, flag.Args(), os.Stdout)
		if err != nil {
			fmt.Fprintln(os.Stderr, "typecheck:", err)
			os.Exit(2)
		}
		if n > 0 {
			fmt.Printf("typecheck: %d errors for %s\n", n, pl)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}

// check type-checks patterns and their tests for goos/goarch and writes
// each error in the main module's packages to out, once (a file checked
// in a package and again in its test variant gives the same errors); it
// returns how many.
func check(goos, goarch string, patterns []string, out io.Writer) (int, error) {
	pkgs, err := list(goos, goarch, patterns)
	if err != nil {
		return 0, err
	}
	sizes := types.SizesFor("gc", goarch)
	if sizes == nil {
		return 0, fmt.Errorf("unknown GOARCH %q", goarch)
	}
	fset := token.NewFileSet()
	done := map[string]*types.Package{"unsafe": types.Unsafe}
	seen := map[string]bool{}
	errs := 0
	report := func(msg string) {
		if !seen[msg] {
			seen[msg] = true
			fmt.Fprintln(out, msg)
			errs++
		}
	}
	// go list -deps lists each package after those it imports.
	for _, p := range pkgs {
		if p.ImportPath == "unsafe" || strings.HasSuffix(p.ImportPath, ".test") {
			continue // unsafe is built in; a .test is go test's generated main
		}
		ours := p.Module != nil && p.Module.Main
		if ours && p.Error != nil {
			report(p.ImportPath + ": " + p.Error.Err)
		}
		files, perr := parse(fset, p, !ours)
		conf := types.Config{
			Importer:         importer{p, done},
			Sizes:            sizes,
			IgnoreFuncBodies: !ours,
			FakeImportC:      len(p.CgoFiles) > 0,
			Error: func(err error) {
				if ours {
					report(err.Error())
				}
			},
		}
		if ours && p.Module.GoVersion != "" {
			conf.GoVersion = "go" + p.Module.GoVersion
		}
		if ours && perr != nil {
			report(perr.Error())
		}
		tp, _ := conf.Check(p.ImportPath, fset, files, nil)
		done[p.ImportPath] = tp
	}
	return errs, nil
}

// list runs go list for goos/goarch, with cgo off as in a cross build.
func list(goos, goarch string, patterns []string) ([]listed, error) {
	args := append([]string{"list", "-e", "-deps", "-test", "-pgo=off", "-json=ImportPath,Dir,GoFiles,CgoFiles,ImportMap,Module,Error"}, patterns...)
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), "GOOS="+goos, "GOARCH="+goarch, "CGO_ENABLED=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list: %v\n%s", err, stderr.Bytes())
	}
	var pkgs []listed
	dec := json.NewDecoder(bytes.NewReader(b))
	for dec.More() {
		var p listed
		if err := dec.Decode(&p); err != nil {
			return nil, fmt.Errorf("go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs, nil
}

// parse parses p's files for go/types; skipBodies drops function bodies,
// which a dependency's check does not look at.
func parse(fset *token.FileSet, p listed, skipBodies bool) ([]*ast.File, error) {
	mode := parser.SkipObjectResolution
	var files []*ast.File
	var first error
	for _, name := range append(append([]string(nil), p.GoFiles...), p.CgoFiles...) {
		if !filepath.IsAbs(name) {
			name = filepath.Join(p.Dir, name)
		}
		f, err := parser.ParseFile(fset, name, nil, mode)
		if err != nil && first == nil {
			first = err
		}
		if f == nil {
			continue
		}
		if skipBodies {
			for _, d := range f.Decls {
				if fd, ok := d.(*ast.FuncDecl); ok {
					fd.Body = nil
				}
			}
		}
		files = append(files, f)
	}
	return files, first
}

// importer resolves the imports of one package to packages already checked.
type importer struct {
	p    listed
	done map[string]*types.Package
}

func (im importer) Import(path string) (*types.Package, error) {
	return im.ImportFrom(path, "", 0)
}

func (im importer) ImportFrom(path, _ string, _ types.ImportMode) (*types.Package, error) {
	if to, ok := im.p.ImportMap[path]; ok {
		path = to
	}
	if tp := im.done[path]; tp != nil {
		return tp, nil
	}
	return nil, fmt.Errorf("%s: not listed before %s", path, im.p.ImportPath)
}
