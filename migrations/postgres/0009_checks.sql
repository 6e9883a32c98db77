-- The last result of each whole-store check, as
-- migrations/sqlite/0009_checks.sql.
CREATE TABLE {p}_checks (
    kind        TEXT   NOT NULL,
    finished_at TEXT   NOT NULL,
    outcome     TEXT   NOT NULL,
    problems    BIGINT NOT NULL,
    summary     TEXT   NOT NULL,
    CONSTRAINT {p}_checks_pk PRIMARY KEY (kind),
    CONSTRAINT {p}_checks_kind CHECK (kind IN ('fsck', 'scrub')),
    CONSTRAINT {p}_checks_outcome CHECK (outcome IN ('clean', 'problems', 'repaired'))
);
