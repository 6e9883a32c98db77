-- Full-text search over names, description, version and custom attribute
-- values, one row per inode (rowid = ino), kept in the same transaction as
-- the metadata it indexes (see meta/sqlite.rs, apply).
CREATE VIRTUAL TABLE {p}_search USING fts5(
    names, description, version, custom,
    tokenize = 'unicode61 remove_diacritics 2'
)
