package outboxui

import (
	"os"
	"strings"
	"testing"
)

// The Go code of docs/console.md is example_test.go, verbatim, so that
// it compiles (and vet checks it).
func TestDocsExample(t *testing.T) {
	doc, err := os.ReadFile("../docs/console.md")
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```go\n")
	if !ok {
		t.Fatal("docs/console.md has no ```go block")
	}
	block, _, ok := strings.Cut(rest, "```\n")
	if !ok {
		t.Fatal("docs/console.md: the ```go block does not end")
	}
	if block != string(example) {
		t.Fatalf("the ```go block of docs/console.md is not outboxui/example_test.go: copy the file into the doc")
	}
	if strings.Count(string(doc), "```go") != 1 {
		t.Fatal("docs/console.md has more than one ```go block; only the first is checked")
	}
}
