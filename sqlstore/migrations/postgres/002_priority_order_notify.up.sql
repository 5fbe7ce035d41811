-- +goose Up
-- Event priority, the indexes of ordered claims, purge and re-queue, and
-- a wake-up for relays on commit.
ALTER TABLE outbox_events ADD COLUMN IF NOT EXISTS priority SMALLINT NOT NULL DEFAULT 0;

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

-- Relays LISTEN on the channel 'outbox.' || the table's name (without its
-- schema; at most 55 bytes). NOTIFY is delivered when the inserting
-- transaction commits, once per transaction, never for a rollback.
CREATE OR REPLACE FUNCTION outbox_events_notify() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN PERFORM pg_notify('outbox.' || TG_TABLE_NAME, ''); RETURN NULL; END $$;

DROP TRIGGER IF EXISTS outbox_events_notify_trg ON outbox_events;

CREATE TRIGGER outbox_events_notify_trg
    AFTER INSERT ON outbox_events
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_events_notify();
