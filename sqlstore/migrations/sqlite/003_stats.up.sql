-- +goose Up
-- Stats: the pending events by type with their oldest creation time, read
-- from this index alone; the synced figures of a window read
-- outbox_events_synced_latency_idx, which covers them.
CREATE INDEX IF NOT EXISTS outbox_events_pending_type_idx
    ON outbox_events (event_type, created_at)
    WHERE synced_at IS NULL AND dead_at IS NULL;

CREATE INDEX IF NOT EXISTS outbox_events_synced_latency_idx
    ON outbox_events (synced_at, created_at)
    WHERE synced_at IS NOT NULL;
