-- 512-byte blocks a regular file's object held when last recorded, NULL
-- while unknown.
ALTER TABLE {p}_inodes ADD COLUMN blocks BIGINT;
