-- +goose Up
-- Partition ownership. Each event belongs to one of 64 partitions of the
-- aggregate space, fixed when it is inserted: the first 32 bits of the MD5
-- of its aggregate ID, modulo 64 (events without an aggregate are hashed
-- from ''). The database computes it, so rows saved by any version of the
-- library, and the backlog already in the table, get the same number. A
-- relay owns whole partitions through outbox_events_partitions and reads
-- their events without leasing rows. Adding a stored generated column
-- rewrites the table under an exclusive lock: migrate while the table is
-- small (after a purge), or in a maintenance window.
ALTER TABLE outbox_events ADD COLUMN IF NOT EXISTS partition_no SMALLINT NOT NULL
    GENERATED ALWAYS AS ((('x' || substr(md5(aggregate_id), 1, 8))::bit(32)::bigint % 64)::smallint) STORED;

-- One row per partition: its owner (a relay's name, NULL when free), the
-- fencing token (raised each time the partition changes hands; every
-- write of an owner checks it) and the end of the lease, on the
-- database's clock. The number of rows is the partition count.
CREATE TABLE IF NOT EXISTS outbox_events_partitions (
    partition_no SMALLINT    PRIMARY KEY,
    owner        VARCHAR(64) NULL,
    token        BIGINT      NOT NULL DEFAULT 0,
    lease_until  TIMESTAMPTZ NOT NULL DEFAULT '-infinity'
);

INSERT INTO outbox_events_partitions (partition_no)
    SELECT generate_series(0, 63) ON CONFLICT DO NOTHING;

-- The live relays, each seen until a time on the database's clock: a
-- relay takes at most its fair share, the partition count over the live
-- relays rounded up.
CREATE TABLE IF NOT EXISTS outbox_events_relays (
    owner      VARCHAR(64) PRIMARY KEY,
    seen_until TIMESTAMPTZ NOT NULL
);
