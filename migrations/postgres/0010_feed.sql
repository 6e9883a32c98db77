-- The change feed: what each committed batch changed, in commit order, so
-- that replicas on other machines drop exactly that from their caches
-- (docs/CLUSTER.md). The writer bumps `{p}_feed.seq` and adds the batch's
-- row in the batch's own transaction: the row lock on the counter makes
-- the numbers gapless and in commit order, so a replica that finds a gap
-- knows rows were pruned and drops every cache.
CREATE TABLE {p}_feed (
    id  SMALLINT NOT NULL CHECK (id = 1),
    seq BIGINT   NOT NULL,
    CONSTRAINT {p}_feed_pk PRIMARY KEY (id)
);
INSERT INTO {p}_feed (id, seq) VALUES (1, 0);

-- One row per batch that changed the namespace: the inodes whose row or
-- attributes changed, and the entries (parent, name) added, replaced or
-- removed. `everything`: too many to list; replicas drop every cache.
CREATE TABLE {p}_changes (
    seq        BIGINT      NOT NULL,
    at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    inos       BIGINT[]    NOT NULL,
    parents    BIGINT[]    NOT NULL,
    names      BYTEA[]     NOT NULL,
    everything BOOLEAN     NOT NULL,
    CONSTRAINT {p}_changes_pk PRIMARY KEY (seq)
);
