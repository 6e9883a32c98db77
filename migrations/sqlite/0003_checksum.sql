-- SHA-256 (hex) of a regular file's content, NULL while unknown (changed
-- since last hashed). Never stale: content changes clear it in the same
-- commit that records them.
ALTER TABLE {p}_inodes ADD COLUMN sha256 TEXT;
