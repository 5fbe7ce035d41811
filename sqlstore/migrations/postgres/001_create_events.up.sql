-- +goose Up
-- The outbox table. One row per event; synced_at IS NULL means pending.
-- Times are written by the application's clock (UTC).
CREATE TABLE IF NOT EXISTS outbox_events (
    seq             BIGSERIAL    PRIMARY KEY,
    id              VARCHAR(64)  NOT NULL UNIQUE,
    topic           VARCHAR(255) NOT NULL,
    event_type      VARCHAR(255) NOT NULL,
    aggregate_id    VARCHAR(255) NOT NULL DEFAULT '',
    payload         BYTEA        NOT NULL,
    headers         TEXT         NULL,
    created_at      TIMESTAMPTZ  NOT NULL,
    synced_at       TIMESTAMPTZ  NULL,
    attempts        INTEGER      NOT NULL DEFAULT 0,
    last_error      TEXT         NULL,
    next_attempt_at TIMESTAMPTZ  NOT NULL,
    claim_token     VARCHAR(64)  NULL,
    locked_until    TIMESTAMPTZ  NULL,
    dead_at         TIMESTAMPTZ  NULL
);

-- Claims walk the pending events in save order.
CREATE INDEX IF NOT EXISTS outbox_events_pending_idx
    ON outbox_events (seq)
    WHERE synced_at IS NULL AND dead_at IS NULL;

-- Per-aggregate order.
CREATE INDEX IF NOT EXISTS outbox_events_aggregate_idx
    ON outbox_events (aggregate_id, seq);

-- Statistics by event type.
CREATE INDEX IF NOT EXISTS outbox_events_type_idx
    ON outbox_events (event_type);
