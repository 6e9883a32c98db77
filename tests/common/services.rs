//! The outside services the test harness can use instead of starting its
//! own, named once: the native path (tests start throwaway servers when the
//! variable is unset) and the container path (docker-compose.test.yml sets
//! the variable to its service) read the same names, and tests/containers.rs
//! checks the compose file against this list.

/// An environment variable the harness reads, and the compose service that
/// provides it.
pub struct External {
    pub var: &'static str,
    pub service: &'static str,
}

/// A PostgreSQL server URL (a superuser's: each test creates and drops its
/// own database there). Read by tests/common/pg.rs.
pub const PG_URL: &str = "ARTFS_TEST_PG_URL";

/// A Redis server URL. Read by tests/common/redis.rs for the tests that
/// only use Redis; those that stop, restart or kill its clients, or need
/// TLS, always start their own.
pub const REDIS_URL: &str = "ARTFS_TEST_REDIS_URL";

/// An S3 protocol server's endpoint that answers unsigned requests (moto),
/// for the test binary's shared server: each store makes a bucket of its
/// own there. Read by tests/common/s3.rs; a binary that pauses its server
/// (tests/s3_outage.rs) starts its own.
pub const S3_ENDPOINT: &str = "ARTFS_TEST_S3_ENDPOINT";

/// Every variable the harness reads, with its service.
pub const EXTERNAL: &[External] = &[
    External {
        var: PG_URL,
        service: "postgres",
    },
    External {
        var: REDIS_URL,
        service: "redis",
    },
    External {
        var: S3_ENDPOINT,
        service: "s3",
    },
];
