-- Moves an existing outbox table (schema version 9, the default layout)
-- to the layout of WithTimePartitions without copying a row: the table
-- becomes the partition of every save time before a cutover (its lower
-- bound MINVALUE), under a new partitioned table of the same name. See
-- "Moving a table" in docs/databases-and-migrations.md. Replace the
-- cutover, '2030-01-01 00:00:00+00', by a period boundary still ahead
-- (the next UTC midnight for days), and outbox_events by the table's
-- name. Saves go on into the old table until the cutover.
--
-- Step 1, outside a transaction, while the service and the relays run:
-- the keys the partitioned table needs, built without blocking writes,
-- and the range of the old table, proved without blocking them either.
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS outbox_events_seq_created_key ON outbox_events (seq, created_at);
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS outbox_events_id_created_key ON outbox_events (id, created_at);
ALTER TABLE outbox_events ADD CONSTRAINT outbox_events_before_cutover CHECK (created_at < '2030-01-01 00:00:00+00') NOT VALID;
ALTER TABLE outbox_events VALIDATE CONSTRAINT outbox_events_before_cutover;

-- Step 2, one transaction: catalog changes only, under an ACCESS
-- EXCLUSIVE lock on the table (saves and relays wait for it, a few
-- milliseconds once granted). Retry it if the lock times out.
BEGIN;
SET LOCAL lock_timeout = '5s';
LOCK TABLE outbox_events IN ACCESS EXCLUSIVE MODE;
ALTER TABLE outbox_events RENAME TO outbox_events_legacy;
ALTER INDEX outbox_events_claim_idx RENAME TO outbox_events_legacy_claim_idx;
ALTER INDEX outbox_events_undelivered_idx RENAME TO outbox_events_legacy_undelivered_idx;
ALTER INDEX outbox_events_synced_idx RENAME TO outbox_events_legacy_synced_idx;
ALTER INDEX outbox_events_dead_idx RENAME TO outbox_events_legacy_dead_idx;
ALTER INDEX outbox_events_pending_type_idx RENAME TO outbox_events_legacy_pending_type_idx;
ALTER INDEX outbox_events_part_seq_idx RENAME TO outbox_events_legacy_part_seq_idx;
ALTER INDEX outbox_events_part_xid_idx RENAME TO outbox_events_legacy_part_xid_idx;
ALTER INDEX outbox_events_per_row_idx RENAME TO outbox_events_legacy_per_row_idx;
-- The old table's keys become those the partitioned table's keys
-- attach, on the indexes of step 1: primary key (seq, created_at) (seq
-- still leads it) and unique (id, created_at); its unique id stays.
ALTER TABLE outbox_events_legacy DROP CONSTRAINT outbox_events_pkey,
    ADD CONSTRAINT outbox_events_legacy_pkey PRIMARY KEY USING INDEX outbox_events_seq_created_key,
    ADD CONSTRAINT outbox_events_legacy_id_created_key UNIQUE USING INDEX outbox_events_id_created_key;
DROP TRIGGER outbox_events_notify_trg ON outbox_events_legacy;
DROP VIEW outbox_events_delivery;
CREATE TABLE outbox_events (
    seq             BIGINT       NOT NULL DEFAULT CASE WHEN txid_current() > 0 THEN nextval('outbox_events_seq_seq'::regclass) END,
    id              VARCHAR(64)  NOT NULL,
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
    dead_at         TIMESTAMPTZ  NULL,
    priority        SMALLINT     NOT NULL DEFAULT 0,
    partition_no    SMALLINT     NOT NULL
        GENERATED ALWAYS AS ((('x' || substr(md5(aggregate_id), 1, 8))::bit(32)::bigint % 64)::smallint) STORED,
    xid             BIGINT       NULL DEFAULT txid_current(),
    PRIMARY KEY (seq, created_at),
    UNIQUE (id, created_at)
) PARTITION BY RANGE (created_at);
-- The sequence goes with the new table: dropping the old partition
-- later must not drop it.
ALTER SEQUENCE outbox_events_seq_seq OWNED BY outbox_events.seq;
ALTER TABLE outbox_events ATTACH PARTITION outbox_events_legacy FOR VALUES FROM (MINVALUE) TO ('2030-01-01 00:00:00+00');
-- The indexes, each attaching the old table's index of the same
-- definition instead of building one.
CREATE INDEX outbox_events_claim_idx ON outbox_events (priority DESC, seq) WHERE synced_at IS NULL AND dead_at IS NULL;
CREATE INDEX outbox_events_undelivered_idx ON outbox_events (aggregate_id, seq) WHERE synced_at IS NULL;
CREATE INDEX outbox_events_synced_idx ON outbox_events (synced_at) WHERE synced_at IS NOT NULL;
CREATE INDEX outbox_events_dead_idx ON outbox_events (seq) WHERE synced_at IS NULL AND dead_at IS NOT NULL;
CREATE INDEX outbox_events_pending_type_idx ON outbox_events (event_type, created_at) WHERE synced_at IS NULL AND dead_at IS NULL;
CREATE INDEX outbox_events_part_seq_idx ON outbox_events (partition_no, seq) WHERE xid IS NOT NULL;
CREATE INDEX outbox_events_part_xid_idx ON outbox_events (partition_no, xid) WHERE xid IS NOT NULL;
CREATE INDEX outbox_events_per_row_idx ON outbox_events (partition_no, seq) WHERE xid IS NULL AND synced_at IS NULL AND dead_at IS NULL;
CREATE TRIGGER outbox_events_notify_trg AFTER INSERT ON outbox_events FOR EACH STATEMENT EXECUTE FUNCTION outbox_events_notify();
CREATE TABLE outbox_events_default PARTITION OF outbox_events DEFAULT WITH (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_cost_delay = 0);
CREATE VIEW outbox_events_delivery AS
SELECT e.*,
       (e.synced_at IS NOT NULL OR m.partition_no IS NOT NULL) AS delivered,
       COALESCE(e.synced_at, m.mark_at) AS delivered_at
FROM outbox_events e
LEFT JOIN LATERAL (
    SELECT p.partition_no, p.mark_at FROM outbox_events_partitions p
    WHERE p.partition_no = e.partition_no AND e.xid IS NOT NULL AND e.dead_at IS NULL
      AND e.seq <= p.mark_seq AND txid_visible_in_snapshot(e.xid, p.mark_snap)
) m ON true;
COMMIT;

-- Step 3: Migrate with WithTimePartitions, or any relay given the
-- option, creates the partitions from the cutover on. Give every Store
-- of the table the option before the cutover. Retention drops the old
-- table like any partition once the cutover is past the retention age
-- and its events are all delivered.
