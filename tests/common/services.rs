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

/// Every variable the harness reads, with its service. Redis (issue 15) and
/// S3 (issue 16) join here when their harnesses read them; compose already
/// runs those services.
pub const EXTERNAL: &[External] = &[External {
    var: PG_URL,
    service: "postgres",
}];
