-- The inode flags chattr sets (FS_IOC_SETFLAGS bits: immutable 0x10,
-- append-only 0x20, nodump 0x40, noatime 0x80), 0 for none.
ALTER TABLE {p}_inodes ADD COLUMN flags INTEGER NOT NULL DEFAULT 0;
