-- 512-byte blocks a regular file's object held when last recorded (at its
-- last close, truncate, upload or import), NULL while unknown, when the
-- size stands in for it. Sparse files then show their real allocation.
ALTER TABLE {p}_inodes ADD COLUMN blocks INTEGER;
