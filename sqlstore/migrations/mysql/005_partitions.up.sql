-- +goose Up
-- Partition ownership (see the Postgres migration of the same name): each
-- event belongs to one of 64 partitions, the first 32 bits of the MD5 of
-- its aggregate ID modulo 64, computed by the database at insert. A
-- relay owns whole partitions through outbox_events_partitions and reads
-- their events without leasing rows.
ALTER TABLE outbox_events
    ADD COLUMN partition_no SMALLINT AS (CONV(SUBSTR(MD5(aggregate_id), 1, 8), 16, 10) % 64) STORED;

CREATE TABLE IF NOT EXISTS outbox_events_partitions (
    partition_no SMALLINT    NOT NULL PRIMARY KEY,
    owner        VARCHAR(64) NULL,
    token        BIGINT      NOT NULL DEFAULT 0,
    lease_until  DATETIME(6) NOT NULL DEFAULT '1970-01-01 00:00:00'
) ENGINE=InnoDB;

INSERT IGNORE INTO outbox_events_partitions (partition_no) VALUES
    (0), (1), (2), (3), (4), (5), (6), (7), (8), (9), (10), (11), (12), (13), (14), (15),
    (16), (17), (18), (19), (20), (21), (22), (23), (24), (25), (26), (27), (28), (29), (30), (31),
    (32), (33), (34), (35), (36), (37), (38), (39), (40), (41), (42), (43), (44), (45), (46), (47),
    (48), (49), (50), (51), (52), (53), (54), (55), (56), (57), (58), (59), (60), (61), (62), (63);

CREATE TABLE IF NOT EXISTS outbox_events_relays (
    owner      VARCHAR(64) NOT NULL PRIMARY KEY,
    seen_until DATETIME(6) NOT NULL
) ENGINE=InnoDB;
