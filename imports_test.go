package outbox

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImportsStandardLibraryOnly keeps the core free of drivers and broker
// clients: the root package and its leaf package storage import the
// standard library, and the root package storage besides.
func TestImportsStandardLibraryOnly(t *testing.T) {
	t.Parallel()
	for dir, allowed := range map[string]string{".": "github.com/eventsync/outbox/storage", "storage": ""} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		checked := 0
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			checked++
			for _, imp := range af.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				first, _, _ := strings.Cut(path, "/")
				if strings.Contains(first, ".") && path != allowed {
					t.Errorf("%s imports %s, which is not in the standard library", f, path)
				}
			}
		}
		if checked == 0 {
			t.Fatalf("no Go files found in %s", dir)
		}
	}
}
