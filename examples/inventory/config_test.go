package main

import (
	"strings"
	"testing"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func TestLoadConfigDefaults(t *testing.T) {
	t.Parallel()
	c, err := loadConfig(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != "127.0.0.1:8080" || c.Publisher != "redis" || c.RedisURL != "" || c.KafkaBrokers != nil || c.Topic != "inventory.events" {
		t.Errorf("defaults: %+v", c)
	}
	if c.DB.Driver != "sqlite" || !strings.HasPrefix(c.DB.DSN, "inventory.db?") || c.DB.Safe != "sqlite:inventory.db" {
		t.Errorf("default database: %+v", c.DB)
	}
	if c.eventsTable() != "outbox_events" || c.stockTable() != "stock" || c.reservationsTable() != "reservations" {
		t.Errorf("table names: %s %s %s", c.eventsTable(), c.stockTable(), c.reservationsTable())
	}
	if len(c.Outbox) != 0 {
		t.Errorf("outbox options without EVENT_SYNC_*: %d", len(c.Outbox))
	}
}

func TestLoadConfigValues(t *testing.T) {
	t.Parallel()
	c, err := loadConfig(env(map[string]string{
		"HTTP_ADDR":             ":9090",
		"DATABASE_URL":          "postgres://app:secret@db.example:5432/inv?sslmode=disable",
		"PUBLISHER":             "kafka",
		"REDIS_URL":             "redis://:pw@localhost:6379/2",
		"KAFKA_BROKERS":         "k1:9092, k2:9092",
		"EVENTS_TOPIC":          "inv",
		"EVENT_SYNC_INTERVAL":   "2s",
		"EVENT_SYNC_BATCH_SIZE": "500",
		"EVENT_SYNC_TIMEOUT":    "5",
		"EVENT_SYNC_WATERMARKS": "true",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Watermarks {
		t.Error("EVENT_SYNC_WATERMARKS=true did not turn watermarks on")
	}
	if c.DB.Driver != "pgx" || strings.Contains(c.DB.Safe, "secret") {
		t.Errorf("database: driver %q, safe %q", c.DB.Driver, c.DB.Safe)
	}
	if c.Publisher != "kafka" || strings.Join(c.KafkaBrokers, ",") != "k1:9092,k2:9092" || c.Topic != "inv" || c.HTTPAddr != ":9090" {
		t.Errorf("config: %+v", c)
	}
	if len(c.Outbox) != 3 {
		t.Errorf("outbox options: %d, want 3", len(c.Outbox))
	}
}

func TestParseDatabaseURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url, driver, dsnPrefix string
	}{
		{"sqlite:data/inv.db", "sqlite", "data/inv.db?"},
		{"sqlite:///var/lib/inventory/inv.db", "sqlite", "/var/lib/inventory/inv.db?"},
		{"postgresql://u@h/db", "pgx", "postgresql://u@h/db"},
		{"mysql://u:p@h/db", "mysql", "u:p@tcp(h:3306)/db?"},
		{"mysql://u@h:3307/db?tls=false", "mysql", "u@tcp(h:3307)/db?"},
	} {
		c, err := parseDatabaseURL(tc.url)
		if err != nil {
			t.Errorf("%s: %v", tc.url, err)
			continue
		}
		if c.Driver != tc.driver || !strings.HasPrefix(c.DSN, tc.dsnPrefix) {
			t.Errorf("%s: got %s %q", tc.url, c.Driver, c.DSN)
		}
		if c.Driver == "mysql" && (!strings.Contains(c.DSN, "parseTime=true") || strings.Contains(c.Safe, ":p@")) {
			t.Errorf("%s: dsn %q safe %q", tc.url, c.DSN, c.Safe)
		}
	}
}

func TestLoadConfigErrorsNameTheVariable(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		env  map[string]string
		want string
	}{
		"http addr":       {map[string]string{"HTTP_ADDR": "8080"}, "HTTP_ADDR"},
		"db scheme":       {map[string]string{"DATABASE_URL": "oracle://x"}, "DATABASE_URL"},
		"db no scheme":    {map[string]string{"DATABASE_URL": "inventory.db"}, "DATABASE_URL"},
		"sqlite empty":    {map[string]string{"DATABASE_URL": "sqlite:"}, "DATABASE_URL"},
		"postgres host":   {map[string]string{"DATABASE_URL": "postgres:///db"}, "DATABASE_URL"},
		"publisher":       {map[string]string{"PUBLISHER": "rabbit"}, "PUBLISHER"},
		"redis url":       {map[string]string{"REDIS_URL": "http://x"}, "REDIS_URL"},
		"kafka brokers":   {map[string]string{"KAFKA_BROKERS": "k1"}, "KAFKA_BROKERS"},
		"interval":        {map[string]string{"EVENT_SYNC_INTERVAL": "soon"}, "EVENT_SYNC_INTERVAL"},
		"batch size":      {map[string]string{"EVENT_SYNC_BATCH_SIZE": "-3"}, "EVENT_SYNC_BATCH_SIZE"},
		"batch size max":  {map[string]string{"EVENT_SYNC_BATCH_SIZE": "100000"}, "EVENT_SYNC_BATCH_SIZE"},
		"timeout too low": {map[string]string{"EVENT_SYNC_TIMEOUT": "1ms"}, "EVENT_SYNC_TIMEOUT"},
		"log level":       {map[string]string{"LOG_LEVEL": "loud"}, "LOG_LEVEL"},
		"watermarks":      {map[string]string{"DATABASE_URL": "postgres://db/inv", "EVENT_SYNC_WATERMARKS": "yes please"}, "EVENT_SYNC_WATERMARKS"},
		"watermarks db":   {map[string]string{"EVENT_SYNC_WATERMARKS": "true"}, "EVENT_SYNC_WATERMARKS"},
	} {
		_, err := loadConfig(env(tc.env))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one naming %s", name, err, tc.want)
		}
	}
}

func TestLoadConfigHidesPasswords(t *testing.T) {
	t.Parallel()
	_, err := loadConfig(env(map[string]string{
		"DATABASE_URL": "postgres://u:hunter2@h:notaport/db",
		"REDIS_URL":    "redis://:hunter2@h:notaport",
	}))
	if err == nil {
		t.Fatal("no error for bad ports")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error shows the password: %v", err)
	}
}

func TestRunExitCodes(t *testing.T) {
	t.Parallel()
	var out, errOut strings.Builder
	if code := run([]string{"bogus"}, env(nil), &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "usage") {
		t.Errorf("unknown argument: exit %d, stderr %q", code, errOut.String())
	}
	errOut.Reset()
	if code := run(nil, env(map[string]string{"PUBLISHER": "carrier-pigeon"}), &out, &errOut); code == 0 || !strings.Contains(errOut.String(), "PUBLISHER") {
		t.Errorf("bad env: exit %d, stderr %q", code, errOut.String())
	}
}
