package main

import (
	"strings"
	"testing"
)

// FuzzParseDatabaseURL checks that DATABASE_URL parsing never panics,
// gives a known driver with a DSN when it succeeds, and never shows the
// password, in an error or in the safe form.
func FuzzParseDatabaseURL(f *testing.F) {
	f.Add(uint8(0), "db.example:5432", "/app?sslmode=disable")
	f.Add(uint8(1), "127.0.0.1", "/test")
	f.Add(uint8(2), "[::1]:3306", "/x?parseTime=true")
	f.Add(uint8(3), "h%zz", "/%")
	f.Add(uint8(0), "", "")
	f.Fuzz(func(t *testing.T, scheme uint8, host, rest string) {
		const secret = "s3cr3tPW"
		s := []string{"postgres", "postgresql", "mysql", "mariadb"}[int(scheme)%4]
		raw := s + "://app:" + secret + "@" + host + rest
		cfg, err := parseDatabaseURL(raw)
		if err != nil {
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("error for %q shows the password: %v", raw, err)
			}
			return
		}
		if cfg.Driver != "pgx" && cfg.Driver != "mysql" || cfg.DSN == "" {
			t.Fatalf("%q parsed as %+v", raw, cfg)
		}
		if strings.Contains(cfg.Safe, secret) {
			t.Fatalf("safe form of %q shows the password: %q", raw, cfg.Safe)
		}
	})
}
