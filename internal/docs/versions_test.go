package docs

import (
	"regexp"
	"testing"
)

// The Redis version the README supports is the one the redisstream
// package documentation states: one figure, checked in both places.
func TestRedisVersionAgrees(t *testing.T) {
	readme := regexp.MustCompile(`Redis (\d+\.\d+)\+`).FindAllStringSubmatch(read(t, "README.md"), -1)
	pkg := regexp.MustCompile(`Redis (\d+\.\d+) or later is supported`).FindAllStringSubmatch(read(t, "redisstream/doc.go"), -1)
	if len(readme) != 1 || len(pkg) != 1 {
		t.Fatalf("want one Redis version in the README (%d found) and one in redisstream/doc.go (%d found)", len(readme), len(pkg))
	}
	if readme[0][1] != pkg[0][1] {
		t.Errorf("the README supports Redis %s+, redisstream/doc.go says %s or later", readme[0][1], pkg[0][1])
	}
}

// The package documentation of outbox and of sqlstore describes relays
// that own partitions, not the claims that leased their rows before them.
func TestPackageDocIsNotStale(t *testing.T) {
	doc := read(t, "doc.go")
	for _, stale := range []string{"claims a batch of due events under a lease", "Claims are leased and fenced by a token"} {
		if regexp.MustCompile(regexp.QuoteMeta(stale)).MatchString(doc) {
			t.Errorf("doc.go still says %q", stale)
		}
	}
	if !regexp.MustCompile(`(?s)owns\s+partitions`).MatchString(doc) {
		t.Error("doc.go does not say that relays own partitions")
	}
	// sqlstore's documentation tells which claims lease rows, not that
	// every claim does.
	sqlDoc := read(t, "sqlstore/doc.go")
	if regexp.MustCompile(`(?s)An ordered claim locks\s+candidates`).MatchString(sqlDoc) {
		t.Error("sqlstore/doc.go says an ordered claim locks and leases rows, which a relay's read of its partitions does not")
	}
	if !regexp.MustCompile(`(?s)Relays own partitions of the table rather than\s+leasing rows`).MatchString(sqlDoc) {
		t.Error("sqlstore/doc.go does not say that relays own partitions rather than leasing rows")
	}
}
