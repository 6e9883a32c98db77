-- The last result of each whole-store check, for `artfs status`: one row
-- per kind ('fsck', 'scrub'), replaced by every run that records one.
-- finished_at is RFC 3339 UTC; outcome is clean, problems or repaired.
CREATE TABLE {p}_checks (
    kind        TEXT    PRIMARY KEY CHECK (kind IN ('fsck', 'scrub')),
    finished_at TEXT    NOT NULL,
    outcome     TEXT    NOT NULL CHECK (outcome IN ('clean', 'problems', 'repaired')),
    problems    INTEGER NOT NULL,
    summary     TEXT    NOT NULL
);
