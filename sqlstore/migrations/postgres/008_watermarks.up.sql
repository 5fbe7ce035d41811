-- +goose Up
-- Delivery recorded per partition (a watermark) instead of per event, for
-- Stores built WithWatermarks. Each event keeps the ID of the transaction
-- that saved it (the 64-bit, epoch-extended txid_current(); rows saved
-- before this migration have NULL and are delivered per row, as before).
-- Adding a nullable column and then its default rewrites nothing.
ALTER TABLE outbox_events ADD COLUMN IF NOT EXISTS xid BIGINT NULL;
ALTER TABLE outbox_events ALTER COLUMN xid SET DEFAULT txid_current();

-- A partition's owner records "delivered up to here": every event of the
-- partition with a transaction ID whose seq is at most mark_seq and whose
-- transaction mark_snap sees as committed. A transaction that took a
-- lower seq and committed later is not in mark_snap, so it is still
-- pending, and found by its transaction ID.
ALTER TABLE outbox_events_partitions ADD COLUMN IF NOT EXISTS mark_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE outbox_events_partitions ADD COLUMN IF NOT EXISTS mark_snap txid_snapshot NULL;

-- The reads of a watermark relay: a partition's events after its mark in
-- save order, and those of transactions its mark did not see.
CREATE INDEX IF NOT EXISTS outbox_events_part_seq_idx
    ON outbox_events (partition_no, seq) WHERE xid IS NOT NULL;
CREATE INDEX IF NOT EXISTS outbox_events_part_xid_idx
    ON outbox_events (partition_no, xid) WHERE xid IS NOT NULL;

-- The events delivered per row that are still pending: failed, held
-- behind a failed or dead event of their aggregate, or saved before this
-- migration. A few rows, not the stream.
CREATE INDEX IF NOT EXISTS outbox_events_per_row_idx
    ON outbox_events (partition_no, seq) WHERE xid IS NULL AND synced_at IS NULL AND dead_at IS NULL;

-- When each partition's mark was last recorded: an event its mark covers
-- was delivered by then.
ALTER TABLE outbox_events_partitions ADD COLUMN IF NOT EXISTS mark_at TIMESTAMPTZ NULL;

-- What the relays delivered by their marks, one row per relay and
-- heartbeat that delivered anything: how many events, and their latency
-- (saved -> acknowledged, in microseconds) as a sum, a maximum and a
-- histogram ("bucket:count,...", bucket = floor(4 * log2(1 + latency))).
-- Stats and the console read these for the events no synced_at records.
-- Heartbeats delete rows older than a day.
CREATE TABLE IF NOT EXISTS outbox_events_deliveries (
    relay          VARCHAR(64) NOT NULL,
    at             TIMESTAMPTZ NOT NULL,
    events         INTEGER     NOT NULL,
    latency_sum_us BIGINT      NOT NULL,
    latency_max_us BIGINT      NOT NULL,
    latency_hist   TEXT        NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_events_deliveries_at_idx ON outbox_events_deliveries (at);

-- Every event with whether it was delivered and by when, with and without
-- watermarks: delivered_at is synced_at or, for an event its partition's
-- mark covers (and not dead), the time that mark was recorded (the event
-- was delivered by then). For monitoring in SQL; the indexes of pending
-- events still serve "NOT delivered AND dead_at IS NULL", but with
-- watermarks they hold every delivered event until it is purged.
CREATE OR REPLACE VIEW outbox_events_delivery AS
SELECT e.*,
       (e.synced_at IS NOT NULL OR m.partition_no IS NOT NULL) AS delivered,
       COALESCE(e.synced_at, m.mark_at) AS delivered_at
FROM outbox_events e
LEFT JOIN LATERAL (
    SELECT p.partition_no, p.mark_at FROM outbox_events_partitions p
    WHERE p.partition_no = e.partition_no AND e.xid IS NOT NULL AND e.dead_at IS NULL
      AND e.seq <= p.mark_seq AND txid_visible_in_snapshot(e.xid, p.mark_snap)
) m ON true;
