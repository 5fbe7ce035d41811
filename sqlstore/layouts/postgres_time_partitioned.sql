-- The outbox table partitioned by save time (WithTimePartitions): the
-- schema of migrations 001 to 008 in one piece, for a table that does not
-- exist yet. Migrate applies it instead of those migrations and records
-- them as applied; later migrations apply to either layout. The
-- partitions themselves (one per period, and a DEFAULT one kept empty)
-- are created by Migrate and by the relays' maintenance, each with the
-- storage parameters of migrations 004 and 005.
--
-- A partitioned table's unique constraints must hold the partition key:
-- seq (from the table's sequence) and id (a UUIDv7 from the SDK) are
-- unique with created_at. Every statement finds rows by seq or by id as
-- before; Postgres enforces their uniqueness within a save time.
CREATE TABLE outbox_events (
    seq             BIGSERIAL    NOT NULL,
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

-- The indexes of migrations 002, 003 and 008 (those that 005 dropped are
-- left out), each created on every partition.
CREATE INDEX outbox_events_claim_idx
    ON outbox_events (priority DESC, seq)
    WHERE synced_at IS NULL AND dead_at IS NULL;
CREATE INDEX outbox_events_undelivered_idx
    ON outbox_events (aggregate_id, seq)
    WHERE synced_at IS NULL;
CREATE INDEX outbox_events_synced_idx
    ON outbox_events (synced_at)
    WHERE synced_at IS NOT NULL;
CREATE INDEX outbox_events_dead_idx
    ON outbox_events (seq)
    WHERE synced_at IS NULL AND dead_at IS NOT NULL;
CREATE INDEX outbox_events_pending_type_idx
    ON outbox_events (event_type, created_at)
    WHERE synced_at IS NULL AND dead_at IS NULL;
CREATE INDEX outbox_events_part_seq_idx
    ON outbox_events (partition_no, seq) WHERE xid IS NOT NULL;
CREATE INDEX outbox_events_part_xid_idx
    ON outbox_events (partition_no, xid) WHERE xid IS NOT NULL;
CREATE INDEX outbox_events_per_row_idx
    ON outbox_events (partition_no, seq) WHERE xid IS NULL AND synced_at IS NULL AND dead_at IS NULL;

-- The wake-up of migration 002: a statement trigger on the partitioned
-- table fires for every INSERT through it.
CREATE OR REPLACE FUNCTION outbox_events_notify() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN PERFORM pg_notify('outbox.' || TG_TABLE_NAME, ''); RETURN NULL; END $$;

DROP TRIGGER IF EXISTS outbox_events_notify_trg ON outbox_events;

CREATE TRIGGER outbox_events_notify_trg
    AFTER INSERT ON outbox_events
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_events_notify();

-- The partitions, relays and deliveries tables of migrations 006 to 008.
CREATE TABLE IF NOT EXISTS outbox_events_partitions (
    partition_no SMALLINT      PRIMARY KEY,
    owner        VARCHAR(64)   NULL,
    token        BIGINT        NOT NULL DEFAULT 0,
    lease_until  TIMESTAMPTZ   NOT NULL DEFAULT '-infinity',
    mark_seq     BIGINT        NOT NULL DEFAULT 0,
    mark_snap    txid_snapshot NULL,
    mark_at      TIMESTAMPTZ   NULL
);

INSERT INTO outbox_events_partitions (partition_no)
    SELECT generate_series(0, 63) ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS outbox_events_relays (
    owner      VARCHAR(64) PRIMARY KEY,
    seen_until TIMESTAMPTZ NOT NULL,
    joined_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS outbox_events_deliveries (
    relay          VARCHAR(64) NOT NULL,
    at             TIMESTAMPTZ NOT NULL,
    events         INTEGER     NOT NULL,
    latency_sum_us BIGINT      NOT NULL,
    latency_max_us BIGINT      NOT NULL,
    latency_hist   TEXT        NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_events_deliveries_at_idx ON outbox_events_deliveries (at);

-- The view of migration 008.
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
