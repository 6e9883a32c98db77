-- Full-text search, as migrations/sqlite/0004_search.sql: one row per
-- inode, kept in the same transaction as the metadata it indexes (see
-- meta/postgres.rs, apply). `doc` holds the four columns of the FTS5 table
-- as weights (names A, description B, version C, custom D), each built
-- from meta::query::index_text so that words split as queries split them.
CREATE TABLE {p}_search (
    ino  BIGINT   NOT NULL,
    doc  TSVECTOR NOT NULL,
    CONSTRAINT {p}_search_pk PRIMARY KEY (ino)
);
CREATE INDEX {p}_search_doc ON {p}_search USING GIN (doc);
