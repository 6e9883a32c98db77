-- SHA-256 (hex) of a regular file's content, NULL while unknown.
ALTER TABLE {p}_inodes ADD COLUMN sha256 TEXT;
