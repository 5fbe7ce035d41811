-- +goose Up
-- Stats: the pending events by type with their oldest creation time, read
-- from this index alone (the synced figures use outbox_events_synced_idx
-- of migration 002, bounded by the window).
CREATE INDEX IF NOT EXISTS outbox_events_pending_type_idx
    ON outbox_events (event_type, created_at)
    WHERE synced_at IS NULL AND dead_at IS NULL;
