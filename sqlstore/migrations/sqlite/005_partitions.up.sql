-- +goose Up
-- Partition ownership (see the Postgres migration of the same name).
-- SQLite has one writer at a time, so there is one partition: a single
-- relay owns every event, and reads them without leasing rows.
ALTER TABLE outbox_events ADD COLUMN partition_no INTEGER NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS outbox_events_partitions (
    partition_no INTEGER PRIMARY KEY,
    owner        TEXT    NULL,
    token        INTEGER NOT NULL DEFAULT 0,
    lease_until  TEXT    NOT NULL DEFAULT '1970-01-01 00:00:00.000000'
);

INSERT OR IGNORE INTO outbox_events_partitions (partition_no) VALUES (0);

CREATE TABLE IF NOT EXISTS outbox_events_relays (
    owner      TEXT PRIMARY KEY,
    seen_until TEXT NOT NULL
);
