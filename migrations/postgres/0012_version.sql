-- The content version the tables hold a regular file to be: the last
-- part of its object's key in a bucket (`<version as 16 hex>.<mtime ns>`),
-- committed with the size it was sent at (docs/S3.md). NULL for a store
-- in a local directory, and for a file whose version is not recorded
-- (the bucket's highest then).
ALTER TABLE {p}_inodes ADD COLUMN version TEXT;
