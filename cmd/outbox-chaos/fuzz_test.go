//go:build unix

package main

import (
	"strings"
	"testing"
)

// FuzzProxiedDSN checks that rewriting a DSN to go through the proxy
// never panics and, when it succeeds, points at the proxy.
func FuzzProxiedDSN(f *testing.F) {
	f.Add(false, "postgres://root@127.0.0.1:5432/test?sslmode=disable")
	f.Add(true, "root@tcp(127.0.0.1:3306)/test")
	f.Add(true, "u:p@unix(/tmp/sock)/db?parseTime=true")
	f.Add(false, "postgres://[::1]/x")
	f.Add(false, "%")
	f.Fuzz(func(t *testing.T, mysql bool, dsn string) {
		db := "postgres"
		if mysql {
			db = "mysql"
		}
		_, via, err := proxiedDSN(db, dsn)
		if err != nil {
			return
		}
		if got := via("127.0.0.1:45678"); !strings.Contains(got, "127.0.0.1:45678") {
			t.Fatalf("%s DSN %q through the proxy is %q", db, dsn, got)
		}
	})
}
