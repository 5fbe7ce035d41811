package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/eventsync/outbox"
	"github.com/eventsync/outbox/sqlstore"
	"github.com/eventsync/outbox/storage"
	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"
)

// The environment variables the service reads, besides the outbox's own
// EVENT_SYNC_INTERVAL, EVENT_SYNC_BATCH_SIZE and EVENT_SYNC_TIMEOUT.
const (
	envHTTPAddr     = "HTTP_ADDR"
	envDatabaseURL  = "DATABASE_URL"
	envPublisher    = "PUBLISHER"
	envRedisURL     = "REDIS_URL"
	envKafkaBrokers = "KAFKA_BROKERS"
	envEventsTopic  = "EVENTS_TOPIC"
	envLogLevel     = "LOG_LEVEL"
)

// Defaults of the configuration.
const (
	defaultHTTPAddr    = "127.0.0.1:8080"
	defaultDatabaseURL = "sqlite:inventory.db"
	defaultPublisher   = publisherRedis
	defaultTopic       = "inventory.events"
	defaultEventsTable = sqlstore.DefaultTable // what the outbox command reads by default

	publisherRedis = "redis"
	publisherKafka = "kafka"
	publisherNoop  = "noop"

	kafkaEmbedded = "embedded"
)

// config is everything the service needs to start.
type config struct {
	HTTPAddr  string
	DB        dbConfig
	Publisher string // publisherRedis, publisherKafka or publisherNoop
	// RedisURL is a redis:// or rediss:// URL; empty runs an in-process
	// Redis-protocol server (miniredis).
	RedisURL string
	// KafkaBrokers are broker addresses; empty runs an in-process Kafka
	// cluster (kfake).
	KafkaBrokers []string
	Topic        string
	LogLevel     string
	// Outbox holds the relay's settings (from EVENT_SYNC_*).
	Outbox []outbox.Option
	// Watermarks records delivery per partition instead of per event
	// (EVENT_SYNC_WATERMARKS, Postgres only).
	Watermarks bool

	// tablePrefix is put before every table name (stock, reservations,
	// events). It is empty in the service; tests on shared servers set it
	// so that each test has its own tables.
	tablePrefix string
}

func (c config) eventsTable() string       { return c.tablePrefix + defaultEventsTable }
func (c config) stockTable() string        { return c.tablePrefix + "stock" }
func (c config) reservationsTable() string { return c.tablePrefix + "reservations" }

// dbConfig says how to open the database.
type dbConfig struct {
	Driver string // database/sql driver name: "sqlite", "pgx" or "mysql"
	DSN    string // the driver's data source name
	Safe   string // the DSN with any password hidden, for logs and errors
}

// loadConfig reads the configuration from the environment through lookup
// (os.LookupEnv in main). An unset or empty variable takes its default; a
// malformed one is an error that names it.
func loadConfig(lookup func(string) (string, bool)) (config, error) {
	get := func(name, def string) string {
		if v, ok := lookup(name); ok && strings.TrimSpace(v) != "" {
			return strings.TrimSpace(v)
		}
		return def
	}
	var c config
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{name}, args...)...))
	}

	c.HTTPAddr = get(envHTTPAddr, defaultHTTPAddr)
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		bad(envHTTPAddr, "%q is not a host:port address (%v)", c.HTTPAddr, err)
	}

	db, err := parseDatabaseURL(get(envDatabaseURL, defaultDatabaseURL))
	if err != nil {
		bad(envDatabaseURL, "%v", err)
	}
	c.DB = db

	c.Publisher = strings.ToLower(get(envPublisher, defaultPublisher))
	switch c.Publisher {
	case publisherRedis, publisherKafka, publisherNoop:
	default:
		bad(envPublisher, "%q is not one of redis, kafka, noop", c.Publisher)
	}

	c.RedisURL = get(envRedisURL, "")
	if c.RedisURL != "" {
		if _, err := redis.ParseURL(c.RedisURL); err != nil {
			// The URL may hold a password: name the variable, not the value.
			bad(envRedisURL, "not a valid redis:// URL: %v", redactURLError(err))
		}
	}

	if brokers := get(envKafkaBrokers, kafkaEmbedded); brokers != kafkaEmbedded {
		for _, b := range strings.Split(brokers, ",") {
			b = strings.TrimSpace(b)
			if _, _, err := net.SplitHostPort(b); err != nil {
				bad(envKafkaBrokers, "%q is not a host:port address (want a comma-separated list, or %q)", b, kafkaEmbedded)
				continue
			}
			c.KafkaBrokers = append(c.KafkaBrokers, b)
		}
	}

	c.Topic = get(envEventsTopic, defaultTopic)
	if len(c.Topic) > outbox.MaxNameLength || !utf8.ValidString(c.Topic) {
		bad(envEventsTopic, "must be valid UTF-8 of at most %d bytes", outbox.MaxNameLength)
	}

	c.LogLevel = strings.ToLower(get(envLogLevel, "info"))
	if _, err := parseLevel(c.LogLevel); err != nil {
		bad(envLogLevel, "%v", err)
	}

	opts, err := relayOptions(lookup)
	if err != nil {
		errs = append(errs, err)
	}
	c.Outbox = opts
	if v, ok := lookup(envWatermarks); ok && strings.TrimSpace(v) != "" {
		on, err := strconv.ParseBool(strings.TrimSpace(v))
		switch {
		case err != nil:
			bad(envWatermarks, "%q is not true or false", v)
		case on && c.DB.Driver != "pgx":
			bad(envWatermarks, "watermarks need Postgres (DATABASE_URL is %s)", c.DB.Driver)
		default:
			c.Watermarks = on
		}
	}

	if err := errors.Join(errs...); err != nil {
		return config{}, err
	}
	return c, nil
}

// relayOptions reads the relay's EVENT_SYNC_* variables and checks their
// limits now, one variable at a time, so that an out-of-range value is
// reported with the variable's name before anything is opened.
func relayOptions(lookup func(string) (string, bool)) ([]outbox.Option, error) {
	s, err := readRelaySettings(lookup)
	if err != nil {
		return nil, err // already names the variable
	}
	for _, one := range []struct {
		name string
		opts []outbox.Option
	}{
		{envInterval, relaySettings{Interval: s.Interval}.options()},
		{envBatchSize, relaySettings{BatchSize: s.BatchSize}.options()},
		{envTimeout, relaySettings{Timeout: s.Timeout}.options()},
	} {
		if _, err := outbox.New(nopStore{}, outbox.Noop{}, one.opts...); err != nil {
			v, _ := lookup(one.name)
			return nil, fmt.Errorf("%s=%q: %w", one.name, v, err)
		}
	}
	return s.options(), nil
}

// parseDatabaseURL turns DATABASE_URL into a driver name and DSN:
//
//	sqlite:PATH                       (also sqlite://PATH)
//	postgres://user:pass@host:5432/db?sslmode=disable
//	mysql://user:pass@host:3306/db
func parseDatabaseURL(raw string) (dbConfig, error) {
	scheme, rest, ok := strings.Cut(raw, ":")
	if !ok {
		return dbConfig{}, fmt.Errorf("%q has no scheme (want sqlite:PATH, postgres://... or mysql://...)", raw)
	}
	switch strings.ToLower(scheme) {
	case "sqlite", "sqlite3":
		path := strings.TrimPrefix(rest, "//")
		if path == "" {
			return dbConfig{}, errors.New("sqlite: the file path is empty (want sqlite:PATH)")
		}
		if strings.ContainsAny(path, "?#") {
			return dbConfig{}, fmt.Errorf("sqlite: the file path %q may not contain '?' or '#'", path)
		}
		return sqliteConfig(path), nil
	case "postgres", "postgresql":
		u, err := url.Parse(raw)
		if err != nil {
			return dbConfig{}, fmt.Errorf("not a valid postgres:// URL: %v", redactURLError(err))
		}
		if u.Host == "" {
			return dbConfig{}, errors.New("postgres: the URL has no host")
		}
		return dbConfig{Driver: "pgx", DSN: raw, Safe: u.Redacted()}, nil
	case "mysql", "mariadb":
		return mysqlConfig(raw)
	default:
		return dbConfig{}, fmt.Errorf("scheme %q is not supported (want sqlite:PATH, postgres://... or mysql://...)", scheme)
	}
}

// sqliteConfig opens the file in WAL mode and waits for locks rather than
// failing at once. The service also keeps a single connection to SQLite,
// which serialises writers anyway.
func sqliteConfig(path string) dbConfig {
	dsn := path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	return dbConfig{Driver: "sqlite", DSN: dsn, Safe: "sqlite:" + path}
}

// mysqlConfig turns mysql://user:pass@host:port/db?params into the
// go-sql-driver DSN user:pass@tcp(host:port)/db?params, with time values
// read back as time.Time in UTC.
func mysqlConfig(raw string) (dbConfig, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return dbConfig{}, fmt.Errorf("not a valid mysql:// URL: %v", redactURLError(err))
	}
	if u.Host == "" {
		return dbConfig{}, errors.New("mysql: the URL has no host")
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "3306")
	}
	var user string
	if u.User != nil {
		user = u.User.Username()
		if p, ok := u.User.Password(); ok {
			user += ":" + p
		}
		user += "@"
	}
	dsn := user + "tcp(" + host + ")/" + strings.TrimPrefix(u.Path, "/")
	if u.RawQuery != "" {
		dsn += "?" + u.RawQuery
	}
	mc, err := mysql.ParseDSN(dsn)
	if err != nil {
		return dbConfig{}, fmt.Errorf("mysql: bad URL parameters: %v", err)
	}
	mc.ParseTime = true
	mc.Loc = time.UTC
	return dbConfig{Driver: "mysql", DSN: mc.FormatDSN(), Safe: u.Redacted()}, nil
}

// redactURLError drops the URL from a *url.Error, which would show a
// password.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// nopStore lets relayOptions check options with outbox.New; it is
// never called.
type nopStore struct{}

func (nopStore) Insert(context.Context, outbox.Executor, []*outbox.Event) error { return nil }
func (nopStore) Claim(context.Context, storage.ClaimRequest) (*outbox.Claim, error) {
	return &outbox.Claim{}, nil
}
func (nopStore) MarkSynced(context.Context, string, []string) (int, error) { return 0, nil }
func (nopStore) Fail(context.Context, string, []storage.Failure) (int, error) {
	return 0, nil
}
func (nopStore) Release(context.Context, string, []string) (int, error) { return 0, nil }
