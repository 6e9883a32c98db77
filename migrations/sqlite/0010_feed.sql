-- The change feed replicas follow (PostgreSQL's 0010_feed.sql) has no use
-- here: a SQLite store is served by one daemon on one machine. The version
-- is kept so both engines number their migrations alike.
SELECT 1;
