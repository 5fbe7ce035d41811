package docs

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// root is the repository's root, from this package's folder.
const root = "../.."

// pages returns the README and every page under docs/, by path from the
// root.
func pages(t *testing.T) []string {
	t.Helper()
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	out := []string{"README.md"}
	for _, d := range docs {
		rel, _ := filepath.Rel(root, d)
		out = append(out, filepath.ToSlash(rel))
	}
	if len(out) < 8 {
		t.Fatalf("pages %v: want the README and the docs/ pages", out)
	}
	return out
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, path))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// block is a fenced code block of a page.
type block struct {
	lang, text string
	source     string // the path of its "<!-- go: PATH -->" line, if any
	line       int
}

var fence = regexp.MustCompile("(?m)^```([a-z]*)\n")

// blocks returns the fenced code blocks of a page.
func blocks(t *testing.T, page string) []block {
	t.Helper()
	s := read(t, page)
	var out []block
	for pos := 0; ; {
		m := fence.FindStringSubmatchIndex(s[pos:])
		if m == nil {
			return out
		}
		start := pos + m[1]
		end := strings.Index(s[start:], "\n```")
		if end < 0 {
			t.Fatalf("%s: a code block that never ends", page)
		}
		b := block{lang: s[pos+m[2] : pos+m[3]], text: s[start : start+end+1], line: strings.Count(s[:start], "\n")}
		before := strings.TrimRight(s[:pos+m[0]], "\n")
		if prev := before[strings.LastIndex(before, "\n")+1:]; strings.HasPrefix(prev, "<!-- go: ") {
			b.source = strings.TrimSuffix(strings.TrimPrefix(prev, "<!-- go: "), " -->")
		}
		out = append(out, b)
		pos = start + end + 4
	}
}

// indented returns text with each non-empty line indented by tabs tabs.
func indented(text string, tabs int) string {
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = strings.Repeat("\t", tabs) + l
		}
	}
	return strings.Join(lines, "\n")
}

// Every Go block of the README and of docs/ names the Go file it is taken
// from, and is in it verbatim (indented as a function body may be), so it
// compiles with that file (go vet and the tests build every one) and
// cannot drift from it. The files are programs a test runs or this
// package's snippets, which its tests run.
func TestGoBlocksAreVerbatimFromCompiledFiles(t *testing.T) {
	n := 0
	for _, page := range pages(t) {
		for _, b := range blocks(t, page) {
			if b.lang != "go" {
				continue
			}
			n++
			if b.source == "" || !strings.HasSuffix(b.source, ".go") || strings.Contains(b.source, "testdata") {
				t.Errorf("%s:%d: a Go block without a \"<!-- go: PATH.go -->\" line naming the compiled file it comes from", page, b.line)
				continue
			}
			src := read(t, b.source)
			found := false
			for tabs := 0; tabs < 4 && !found; tabs++ {
				found = strings.Contains(src, indented(b.text, tabs))
			}
			if !found {
				t.Errorf("%s:%d: the Go block is not verbatim in %s", page, b.line, b.source)
			}
		}
	}
	if n < 8 {
		t.Errorf("%d Go blocks in all: the check found fewer than the pages hold", n)
	}
}

// The README's Quickstart and "Using pgx" are the whole programs that
// programtest runs against Postgres and Redis.
func TestReadmeShowsTheProgramsWhole(t *testing.T) {
	want := map[string]string{"## Quickstart": "examples/quickstart/main.go", "## Using pgx": "examples/quickstartpgx/main.go"}
	readme := read(t, "README.md")
	for heading, file := range want {
		_, section, ok := strings.Cut(readme, "\n"+heading+"\n")
		if !ok {
			t.Errorf("README has no %q", heading)
			continue
		}
		section, _, _ = strings.Cut(section, "\n## ")
		if !strings.Contains(section, "```go\n"+read(t, file)+"```\n") {
			t.Errorf("README %q does not show %s whole and verbatim", heading, file)
		}
	}
}

// The README is a five-minute read, holds the test command .ci/run runs,
// and says where the example service listens.
func TestReadmeIsShort(t *testing.T) {
	readme := read(t, "README.md")
	if n := len(strings.Fields(readme)); n > 1800 {
		t.Errorf("README.md has %d words; keep it under 1,800 and move the rest to docs/", n)
	}
	const cmd = "go test -race -count=1 ./..."
	if !strings.Contains(readme, "```sh\n"+cmd+"\n```") {
		t.Errorf("README.md does not show %q in a block of its own", cmd)
	}
	if !strings.Contains(read(t, ".ci/run"), "\n"+cmd+"\n") {
		t.Errorf(".ci/run does not run the README's %q", cmd)
	}
	for _, s := range []string{"go run ./examples/inventory\n", "127.0.0.1:8080", "examples/inventory/README.md"} {
		if !strings.Contains(readme, s) {
			t.Errorf("README.md lacks %q", s)
		}
	}
}

var link = regexp.MustCompile(`\]\(([^)#\s]+)(#[^)]*)?\)`)

// Every relative link of the README and of docs/ leads to a file or
// folder of the repository, and every anchor to a heading of its page.
func TestLinksResolve(t *testing.T) {
	for _, page := range pages(t) {
		for _, m := range link.FindAllStringSubmatch(read(t, page), -1) {
			target, anchor := m[1], strings.TrimPrefix(m[2], "#")
			if strings.Contains(target, "://") {
				continue
			}
			path := filepath.ToSlash(filepath.Join(filepath.Dir(page), target))
			if _, err := os.Stat(filepath.Join(root, path)); err != nil {
				t.Errorf("%s: link to %s: %v", page, target, err)
				continue
			}
			if anchor != "" && strings.HasSuffix(path, ".md") && !slices.Contains(anchors(read(t, path)), anchor) {
				t.Errorf("%s: link to %s#%s: no such heading", page, target, anchor)
			}
		}
	}
}

// anchors returns the anchors GitHub gives the headings of a page.
func anchors(page string) []string {
	var out []string
	for _, l := range strings.Split(page, "\n") {
		h, ok := strings.CutPrefix(l, "#")
		if !ok {
			continue
		}
		h = strings.ToLower(strings.TrimSpace(strings.TrimLeft(h, "#")))
		var b strings.Builder
		for _, r := range h {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || ('a' <= r && r <= 'z') || ('0' <= r && r <= '9'):
				b.WriteRune(r)
			}
		}
		out = append(out, b.String())
	}
	return out
}

var goPath = regexp.MustCompile(`(?:^|[\s(])(\./[\w./-]+)|\bcd ([\w./-]+)`)

// Every package or folder a shell block runs (go run ./x, go test ./x/,
// cd x) exists, and every JSON block parses.
func TestShellAndJSONBlocks(t *testing.T) {
	for _, page := range pages(t) {
		for _, b := range blocks(t, page) {
			switch b.lang {
			case "sh":
				for _, m := range goPath.FindAllStringSubmatch(b.text, -1) {
					p := strings.TrimSuffix(strings.TrimSuffix(m[1]+m[2], "..."), "/")
					if p == "." || p == "" {
						continue
					}
					dir := root
					if c := regexp.MustCompile(`^cd ([\w-]+) &&`).FindStringSubmatch(b.text); c != nil && m[2] == "" {
						dir = filepath.Join(root, c[1]) // paths after "cd x &&" are x's
					}
					if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
						t.Errorf("%s:%d: %q names %s, which does not exist", page, b.line, m[0], p)
					}
				}
			case "json":
				var v any
				if err := json.Unmarshal([]byte(b.text), &v); err != nil {
					t.Errorf("%s:%d: JSON block: %v", page, b.line, err)
				}
			}
		}
	}
}
