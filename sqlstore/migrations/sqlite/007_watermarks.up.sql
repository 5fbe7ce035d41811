-- +goose Up
-- Delivery recorded per partition (a watermark) instead of per event, for
-- Stores built WithWatermarks (see the Postgres migration of the same
-- name). SQLite has one writer at a time, so events commit in seq order:
-- an event with a seq at most that of an event a read sees was committed
-- before it, and a partition's mark is a seq alone, with no snapshot.
--
-- xid says how an event's delivery is recorded: by its partition's mark
-- when it is set (1 for every new row), per row (synced_at) when it is
-- NULL (failed, held behind another, released after a read covered it).
-- SQLite gives rows present before ADD COLUMN its default: the UPDATE
-- makes them per-row, as they were (rewriting each row once).
ALTER TABLE outbox_events ADD COLUMN xid INTEGER NULL DEFAULT 1;
UPDATE outbox_events SET xid = NULL;

-- A partition's owner records "delivered up to here": every event of the
-- partition with an xid whose seq is at most mark_seq, as of mark_at.
ALTER TABLE outbox_events_partitions ADD COLUMN mark_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox_events_partitions ADD COLUMN mark_at TEXT NULL;

-- The reads of a watermark relay: a partition's events after its mark in
-- save order.
CREATE INDEX IF NOT EXISTS outbox_events_part_seq_idx
    ON outbox_events (partition_no, seq) WHERE xid IS NOT NULL;

-- The events delivered per row that are still pending: failed, held
-- behind a failed or dead event of their aggregate, or saved before this
-- migration. A few rows, not the stream.
CREATE INDEX IF NOT EXISTS outbox_events_per_row_idx
    ON outbox_events (partition_no, seq) WHERE xid IS NULL AND synced_at IS NULL AND dead_at IS NULL;

-- What the relays delivered by their marks, one row per relay and
-- heartbeat that delivered anything (see the Postgres migration 008).
-- Heartbeats delete rows older than a day.
CREATE TABLE IF NOT EXISTS outbox_events_deliveries (
    relay          TEXT    NOT NULL,
    at             TEXT    NOT NULL,
    events         INTEGER NOT NULL,
    latency_sum_us INTEGER NOT NULL,
    latency_max_us INTEGER NOT NULL,
    latency_hist   TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_events_deliveries_at_idx ON outbox_events_deliveries (at);

-- Every event with whether it was delivered (1 or 0) and by when, with
-- and without watermarks: delivered_at is synced_at or, for an event its
-- partition's mark covers (and not dead), the time that mark was
-- recorded (the event was delivered by then).
CREATE VIEW IF NOT EXISTS outbox_events_delivery AS
SELECT e.*,
       (e.synced_at IS NOT NULL OR m.partition_no IS NOT NULL) AS delivered,
       COALESCE(e.synced_at, m.mark_at) AS delivered_at
FROM outbox_events e
LEFT JOIN outbox_events_partitions m
    ON m.partition_no = e.partition_no AND e.xid IS NOT NULL AND e.dead_at IS NULL AND e.seq <= m.mark_seq;
