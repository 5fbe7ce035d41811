-- +goose Up
-- The outbox table. One row per event; synced_at IS NULL means pending.
-- Times are written by the application's clock, in UTC (DATETIME has no
-- zone). MySQL has no partial indexes: pending events are found through
-- (synced_at, dead_at, seq), where they sort first, in save order.
CREATE TABLE IF NOT EXISTS outbox_events (
    seq             BIGINT       NOT NULL AUTO_INCREMENT,
    id              VARCHAR(64)  NOT NULL,
    topic           VARCHAR(255) NOT NULL,
    event_type      VARCHAR(255) NOT NULL,
    aggregate_id    VARCHAR(255) NOT NULL DEFAULT '',
    payload         LONGBLOB     NOT NULL,
    headers         MEDIUMTEXT   NULL,
    created_at      DATETIME(6)  NOT NULL,
    synced_at       DATETIME(6)  NULL,
    attempts        INT          NOT NULL DEFAULT 0,
    last_error      TEXT         NULL,
    next_attempt_at DATETIME(6)  NOT NULL,
    claim_token     VARCHAR(64)  NULL,
    locked_until    DATETIME(6)  NULL,
    dead_at         DATETIME(6)  NULL,
    PRIMARY KEY (seq),
    UNIQUE KEY outbox_events_id_key (id),
    KEY outbox_events_pending_idx (synced_at, dead_at, seq),
    KEY outbox_events_aggregate_idx (aggregate_id, seq),
    KEY outbox_events_type_idx (event_type)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
