-- +goose Up
-- Event priority and the indexes of ordered claims, purge and re-queue.
ALTER TABLE outbox_events ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;

-- Claims take due events by priority, then in save order.
CREATE INDEX IF NOT EXISTS outbox_events_claim_idx
    ON outbox_events (priority DESC, seq)
    WHERE synced_at IS NULL AND dead_at IS NULL;

-- Per-aggregate order: the undelivered (pending or dead) events of one
-- aggregate in save order, read by every ordered claim.
CREATE INDEX IF NOT EXISTS outbox_events_undelivered_idx
    ON outbox_events (aggregate_id, seq)
    WHERE synced_at IS NULL;

-- Purge: synced events by age.
CREATE INDEX IF NOT EXISTS outbox_events_synced_idx
    ON outbox_events (synced_at)
    WHERE synced_at IS NOT NULL;

-- Re-queue: buried events.
CREATE INDEX IF NOT EXISTS outbox_events_dead_idx
    ON outbox_events (seq)
    WHERE synced_at IS NULL AND dead_at IS NOT NULL;
