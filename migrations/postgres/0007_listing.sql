-- The original API's file listing (`GET /api/v1/files/`) walks regular
-- files newest first: creation time, then file id for equal times (bytewise,
-- as SQLite compares, whatever the database's collation).
CREATE INDEX {p}_inodes_listing ON {p}_inodes (crtime, file_id COLLATE "C") WHERE kind = 1 AND nlink > 0;
