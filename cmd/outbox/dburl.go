package main

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/eventsync/outbox/sqlstore"
)

// database is where a --db URL points.
type database struct {
	dialect sqlstore.Dialect
	driver  string // database/sql driver name
	dsn     string // what the driver opens
	path    string // SQLite: the file
}

// urlForms is how the accepted URLs look, for error messages.
const urlForms = "postgres://user:pass@host:5432/db?sslmode=disable, " +
	"mysql://user:pass@host:3306/db (or mysql://user:pass@tcp(host:3306)/db), " +
	"or sqlite:PATH"

var errBadURL = errors.New("bad database URL")

// parseDB turns a --db URL into a driver and a DSN.
//
//   - postgres://… or postgresql://…: passed to pgx as is.
//   - mysql://USER[:PASS]@HOST[:PORT]/DB[?PARAMS]: the port defaults to
//     3306; mysql://USER[:PASS]@tcp(HOST:PORT)/DB[?PARAMS] (a
//     go-sql-driver DSN after the scheme) works too.
//   - sqlite:PATH or sqlite://PATH, with optional ?PARAMS for the driver
//     (a busy timeout of 5 s is added unless set).
func parseDB(raw string) (*database, error) {
	bad := func(format string, args ...any) (*database, error) {
		return nil, fmt.Errorf("%w %q: %s; want %s", errBadURL, redact(raw), fmt.Sprintf(format, args...), urlForms)
	}
	scheme, rest, ok := strings.Cut(raw, ":")
	if !ok || raw == "" {
		return bad("no scheme")
	}
	switch strings.ToLower(scheme) {
	case "postgres", "postgresql":
		if _, err := pgconn.ParseConfig(raw); err != nil {
			return bad("%v", err)
		}
		return &database{dialect: sqlstore.Postgres, driver: "pgx", dsn: raw}, nil
	case "mysql":
		dsn, err := mysqlDSN(strings.TrimPrefix(rest, "//"))
		if err != nil {
			return bad("%v", err)
		}
		return &database{dialect: sqlstore.MySQL, driver: "mysql", dsn: dsn}, nil
	case "sqlite", "sqlite3":
		path, query, _ := strings.Cut(strings.TrimPrefix(rest, "//"), "?")
		if path == "" {
			return bad("no file path")
		}
		params, err := url.ParseQuery(query)
		if err != nil {
			return bad("parameters: %v", err)
		}
		if !strings.Contains(query, "busy_timeout") {
			params.Add("_pragma", "busy_timeout(5000)")
		}
		return &database{dialect: sqlstore.SQLite, driver: "sqlite", dsn: "file:" + path + "?" + params.Encode(), path: path}, nil
	default:
		return bad("unknown scheme %q", scheme)
	}
}

// mysqlDSN turns the part after mysql:// into a go-sql-driver DSN.
func mysqlDSN(s string) (string, error) {
	at := strings.LastIndex(s, "@")
	if at >= 0 && (strings.HasPrefix(s[at+1:], "tcp(") || strings.HasPrefix(s[at+1:], "unix(")) {
		cfg, err := mysql.ParseDSN(s)
		if err != nil {
			return "", err
		}
		if cfg.DBName == "" {
			return "", errors.New("no database name")
		}
		return cfg.FormatDSN(), nil
	}
	u, err := url.Parse("mysql://" + s)
	if err != nil {
		return "", errors.New("cannot parse it as user:pass@host:port/db")
	}
	cfg := mysql.NewConfig()
	if u.User != nil {
		cfg.User = u.User.Username()
		cfg.Passwd, _ = u.User.Password()
	}
	if u.Host == "" {
		return "", errors.New("no host")
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "3306"
	}
	cfg.Net, cfg.Addr = "tcp", net.JoinHostPort(host, port)
	cfg.DBName = strings.TrimPrefix(u.Path, "/")
	if cfg.DBName == "" || strings.Contains(cfg.DBName, "/") {
		return "", errors.New("no database name (…/DB)")
	}
	dsn := cfg.FormatDSN()
	if u.RawQuery != "" {
		dsn += "?" + u.RawQuery
		if _, err := mysql.ParseDSN(dsn); err != nil {
			return "", fmt.Errorf("parameters: %v", err)
		}
	}
	return dsn, nil
}

// redact hides the password of a URL (scheme://user:password@host…) for
// messages; the password may itself contain '@', ':' or '/'.
func redact(raw string) string {
	i := strings.Index(raw, "://")
	at := strings.LastIndex(raw, "@")
	if i < 0 || at < i+3 {
		return raw
	}
	user, _, hasPass := strings.Cut(raw[i+3:at], ":")
	if !hasPass {
		return raw
	}
	return raw[:i+3] + user + ":xxxxx" + raw[at:]
}

// fileExists reports whether an SQLite database file is there.
func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
