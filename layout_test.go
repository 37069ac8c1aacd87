package bhiv_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImportRules checks the layout's import rules (CONTRIBUTING.md) on the
// non-test files of every package: the model makes no NATS calls, sinks know
// no NATS, the consumer knows no sink, the publisher needs only the model
// and NATS, and nothing imports the binary.
func TestImportRules(t *testing.T) {
	const mod = "github.com/hackaverse/bhiv"
	imports := map[string]map[string]bool{} // package dir → its imports
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), p, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		dir := filepath.ToSlash(filepath.Dir(p))
		if imports[dir] == nil {
			imports[dir] = map[string]bool{}
		}
		for _, im := range f.Imports {
			v, _ := strconv.Unquote(im.Path.Value)
			imports[dir][v] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{".", "sinks", "consumer", "publisher", "cmd/bhiv"} {
		if imports[dir] == nil {
			t.Fatalf("no package found in %s: the walk is wrong", dir)
		}
	}
	std := func(im string) bool { return !strings.Contains(strings.SplitN(im, "/", 2)[0], ".") }
	allowed := func(list ...string) func(string) bool {
		return func(im string) bool {
			for _, a := range list {
				if im == a || strings.HasPrefix(im, a+"/") {
					return true
				}
			}
			return std(im)
		}
	}
	for _, rule := range []struct {
		dir string
		ok  func(im string) bool
	}{
		{".", func(im string) bool {
			return !strings.HasPrefix(im, "github.com/nats-io/") && (!strings.HasPrefix(im, mod+"/") || im == mod+"/internal/config")
		}},
		{"publisher", allowed(mod+"/internal/config", mod+"/internal/jsstream", "github.com/nats-io/nats.go")},
		{"sinks", func(im string) bool {
			return !strings.HasPrefix(im, "github.com/nats-io/") && !strings.HasPrefix(im, mod+"/consumer") &&
				!strings.HasPrefix(im, mod+"/publisher") && !strings.HasPrefix(im, mod+"/cmd")
		}},
		{"consumer", func(im string) bool {
			return !strings.HasPrefix(im, mod+"/sinks") && !strings.HasPrefix(im, mod+"/publisher") && !strings.HasPrefix(im, mod+"/cmd")
		}},
	} {
		for im := range imports[rule.dir] {
			if im != mod && !rule.ok(im) {
				t.Errorf("%s imports %s", path.Join(mod, rule.dir), im)
			}
		}
	}
	for dir, ims := range imports {
		for im := range ims {
			if strings.HasPrefix(im, mod+"/cmd") {
				t.Errorf("%s imports the binary, %s", dir, im)
			}
		}
	}
}
