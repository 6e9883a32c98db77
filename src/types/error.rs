//! The core's error type. Every error carries the errno a local filesystem
//! would return, so both doors map it without knowing where it came from;
//! its source (an `io::Error`, a database error with its code) stays
//! attached, and a door adds where it happened ([`Context`]: operation,
//! inode, path) before logging it once at the level [`Error::level`] picks.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// Result alias used throughout the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Any error kept as a source (a database driver's, boxed so this layer
/// names no driver).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug)]
pub enum Error {
    /// A POSIX condition (ENOENT, EEXIST, ...) with a short reason.
    Posix { errno: i32, reason: &'static str },
    /// The same with a reason built at run time (which attribute, what
    /// bound), for refusals people must understand.
    PosixMsg { errno: i32, reason: String },
    /// An I/O error from the backing directory.
    Io(std::io::Error),
    /// The metadata store failed, said in words (a corrupt row, the
    /// writer stopped); EIO. Driver errors are [`Error::Database`].
    Meta(String),
    /// The database answered with an error; EIO. `code` is what the
    /// engine calls it (SQLite's extended result code as a number,
    /// PostgreSQL's SQLSTATE), when it gave one.
    Database {
        code: Option<String>,
        message: String,
        source: BoxError,
    },
    /// A policy refusal with a message for people (a mode transition).
    Policy(String),
    /// This process lost the store's writer lease to another (see
    /// `meta::lease`): nothing it stages can be committed; EROFS.
    Fenced(String),
    /// The metadata writer could not commit a change someone waits for:
    /// its error, shared by every waiter (so its code and causes stay).
    Uncommitted(Arc<Error>),
    /// An error and where it happened; added by the doors
    /// ([`Error::with_context`]), so core code never sees it.
    Context { context: Context, inner: Box<Error> },
}

/// Where an error happened: the operation (a FUSE request name, an HTTP
/// route) and the inode and path when known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    pub op: Cow<'static, str>,
    pub ino: Option<u64>,
    pub path: Option<String>,
}

impl Context {
    pub fn op(op: impl Into<Cow<'static, str>>) -> Context {
        Context {
            op: op.into(),
            ino: None,
            path: None,
        }
    }

    pub fn ino(mut self, ino: u64) -> Context {
        self.ino = Some(ino);
        self
    }

    pub fn path(mut self, path: impl Into<String>) -> Context {
        self.path = Some(path.into());
        self
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.op)?;
        if let Some(ino) = self.ino {
            write!(f, " ino {ino}")?;
        }
        if let Some(p) = &self.path {
            write!(f, " {p:?}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Posix { errno, reason } => write!(f, "{reason} ({})", errno_text(*errno)),
            Error::PosixMsg { errno, reason } => write!(f, "{reason} ({})", errno_text(*errno)),
            Error::Io(e) => write!(f, "backing store I/O: {e}"),
            Error::Meta(m) => write!(f, "metadata store: {m}"),
            Error::Database { message, .. } => write!(f, "metadata store: {message}"),
            Error::Policy(m) => f.write_str(m),
            Error::Fenced(m) => write!(f, "fenced: {m}"),
            Error::Uncommitted(e) => write!(f, "cannot commit metadata: {e}"),
            Error::Context { context, inner } => write!(f, "{context}: {inner}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Database { source, .. } => Some(source.as_ref()),
            // The inner error is part of this one's text; its cause is next.
            Error::Context { inner, .. } => inner.source(),
            Error::Uncommitted(e) => e.source(),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::Io(e)
    }
}

impl Error {
    pub const fn posix(errno: i32, reason: &'static str) -> Error {
        Error::Posix { errno, reason }
    }

    pub fn posix_msg(errno: i32, reason: impl Into<String>) -> Error {
        Error::PosixMsg {
            errno,
            reason: reason.into(),
        }
    }

    /// The metadata store failed, said in words (EIO).
    pub fn meta(message: impl Into<String>) -> Error {
        Error::Meta(message.into())
    }

    /// A database's error, with the engine's code for it when it has one
    /// (see [`Error::Database`]).
    pub fn database(
        code: Option<String>,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Error {
        Error::Database {
            code,
            message: message.into(),
            source: source.into(),
        }
    }

    /// This error, saying where it happened. A context already attached
    /// (nearer the failure) keeps what it says; `context` fills the rest.
    pub fn with_context(self, context: Context) -> Error {
        match self {
            Error::Context {
                context: mut c,
                inner,
            } => {
                if c.op.is_empty() {
                    c.op = context.op;
                }
                c.ino = c.ino.or(context.ino);
                c.path = c.path.or(context.path);
                Error::Context { context: c, inner }
            }
            e => Error::Context {
                context,
                inner: Box::new(e),
            },
        }
    }

    /// Where it happened, if a door said so.
    pub fn context(&self) -> Option<&Context> {
        match self {
            Error::Context { context, .. } => Some(context),
            _ => None,
        }
    }

    /// The error itself, without the context a door added (and, for a
    /// change the writer could not commit, the writer's error).
    pub fn bare(&self) -> &Error {
        match self {
            Error::Context { inner, .. } => inner.bare(),
            Error::Uncommitted(e) => e.bare(),
            e => e,
        }
    }

    /// The database's code for it (SQLite's extended result code as a
    /// number, or PostgreSQL's five-character SQLSTATE), if any.
    pub fn code(&self) -> Option<&str> {
        match self.bare() {
            Error::Database { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// Whether the failure is the disk (or database) being full: ENOSPC
    /// (from the backing directory, or under a database error), SQLite's
    /// SQLITE_FULL (13, any extended code of it), PostgreSQL's 53100
    /// (disk_full). Decided by codes, never by a message's words.
    pub fn is_disk_full(&self) -> bool {
        match self.bare() {
            Error::Io(e) => e.raw_os_error() == Some(libc::ENOSPC),
            Error::Database { code, source, .. } => {
                code.as_deref().is_some_and(is_full_code) || io_enospc_in(source.as_ref())
            }
            Error::Posix { errno, .. } | Error::PosixMsg { errno, .. } => *errno == libc::ENOSPC,
            Error::Meta(_) | Error::Policy(_) | Error::Fenced(_) => false,
            Error::Context { .. } | Error::Uncommitted(_) => unreachable!("bare() sees through it"),
        }
    }

    /// The errno to hand back to the kernel.
    pub fn errno(&self) -> i32 {
        match self.bare() {
            Error::Posix { errno, .. } | Error::PosixMsg { errno, .. } => *errno,
            Error::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
            Error::Meta(_) | Error::Database { .. } => libc::EIO,
            Error::Policy(_) => libc::EPERM,
            Error::Fenced(_) => libc::EROFS,
            Error::Context { .. } | Error::Uncommitted(_) => unreachable!("bare() sees through it"),
        }
    }

    /// The level a door logs this error at: the one table, for both doors.
    /// - DEBUG: answers a local filesystem gives in normal use (ENOENT,
    ///   EEXIST, ENOTEMPTY, ENODATA, EINVAL, ENAMETOOLONG, ...): the
    ///   caller's business, and a `find` or a build probing paths makes
    ///   thousands of them;
    /// - INFO: refusals by a rule of the store (EACCES, EPERM, EROFS, a
    ///   policy): normal, but an operator may want to see who was refused;
    /// - WARN: the store is full (ENOSPC, EDQUOT, a full database: see
    ///   [`Error::is_disk_full`]), an errno outside the table, an I/O
    ///   error of the backing directory other than EIO (EMFILE, ENOMEM:
    ///   the host is short of something): the operator must act;
    /// - ERROR: EIO and every database failure: data could not be read or
    ///   saved; and a lost writer lease (EROFS, but the operator must act).
    pub fn level(&self) -> tracing::Level {
        use tracing::Level;
        if self.is_disk_full() {
            return Level::WARN;
        }
        match self.bare() {
            Error::Meta(_) | Error::Database { .. } | Error::Fenced(_) => Level::ERROR,
            Error::Io(e) => match e.raw_os_error() {
                None | Some(libc::EIO) => Level::ERROR,
                Some(_) => Level::WARN,
            },
            e => errno_level(e.errno()),
        }
    }

    /// Whether [`Error::log`] would record anything. The expected failures
    /// (a lookup of a name about to be created, a getxattr of an attribute
    /// the file lacks) are debug events, and a door checks this before it
    /// builds the context and the report they would carry: every create
    /// answers one of each.
    pub fn would_log(&self) -> bool {
        Failure::enabled(self.level())
    }

    /// Log this error once, as a door's answer to a request (`reply`:
    /// what the caller got, an errno name or an HTTP status): at
    /// [`Error::level`], with where it happened (the context's operation,
    /// inode and path), its errno, its database code and its causes.
    pub fn log(&self, reply: &dyn fmt::Display) {
        if !self.would_log() {
            return;
        }
        let failure = Failure {
            at: self.context(),
            errno: errno_label(self.errno()),
            code: self.code(),
            reply,
            report: &self.report(),
        };
        failure.log(self.level());
    }

    /// The error and its causes, each once: "what: why: root cause".
    /// (A cause whose text the message already holds is not repeated.)
    pub fn report(&self) -> String {
        let mut out = self.to_string();
        let mut next = std::error::Error::source(self);
        while let Some(e) = next {
            let s = e.to_string();
            if !out.contains(&s) {
                out.push_str(": ");
                out.push_str(&s);
            }
            next = e.source();
        }
        out
    }
}

/// A request a door failed, as it is logged: the one format for both
/// doors (see [`Error::log`]; the HTTP door also logs refusals that
/// answer no core error, such as a bad token).
pub struct Failure<'a> {
    pub at: Option<&'a Context>,
    /// The errno's name (see [`errno_label`]), or `none`.
    pub errno: &'a str,
    /// The database's code (see [`Error::code`]).
    pub code: Option<&'a str>,
    /// What the caller got: an errno name, an HTTP status.
    pub reply: &'a dyn fmt::Display,
    /// The error and its causes.
    pub report: &'a str,
}

impl Failure<'_> {
    /// Whether an event at `level` would be recorded (asked here, where
    /// the events are made, so that a per-target filter is honoured).
    pub fn enabled(level: tracing::Level) -> bool {
        match level {
            tracing::Level::ERROR => tracing::enabled!(tracing::Level::ERROR),
            tracing::Level::WARN => tracing::enabled!(tracing::Level::WARN),
            tracing::Level::INFO => tracing::enabled!(tracing::Level::INFO),
            _ => tracing::enabled!(tracing::Level::DEBUG),
        }
    }

    /// Log it once, at `level`.
    pub fn log(&self, level: tracing::Level) {
        let op = self.at.map_or("", |c| c.op.as_ref());
        let ino = self.at.and_then(|c| c.ino);
        let path = self.at.and_then(|c| c.path.as_deref());
        let (errno, code, reply, report) = (self.errno, self.code, self.reply, self.report);
        macro_rules! event {
            ($event:ident) => {
                tracing::$event!(op, ino, path, errno, code, %reply, "request failed: {report}")
            };
        }
        match level {
            tracing::Level::ERROR => event!(error),
            tracing::Level::WARN => event!(warn),
            tracing::Level::INFO => event!(info),
            _ => event!(debug),
        }
    }
}

/// The level of an error known only by its errno (see [`Error::level`]).
pub fn errno_level(errno: i32) -> tracing::Level {
    use tracing::Level;
    match errno {
        libc::ENOENT
        | libc::EEXIST
        | libc::ENOTEMPTY
        | libc::ENODATA
        | libc::EAGAIN
        | libc::EINTR
        | libc::ENOTDIR
        | libc::EISDIR
        | libc::ELOOP
        | libc::EXDEV
        | libc::EMLINK
        | libc::EBUSY
        | libc::ETXTBSY
        | libc::ERANGE
        | libc::E2BIG
        | libc::ENXIO
        | libc::ENOTTY
        | libc::ENOSYS
        | libc::EOPNOTSUPP
        | libc::ESTALE
        | libc::EBADF
        | libc::EINVAL
        | libc::ENAMETOOLONG
        | libc::EFBIG => Level::DEBUG,
        libc::EACCES | libc::EPERM | libc::EROFS => Level::INFO,
        libc::EIO => Level::ERROR,
        _ => Level::WARN,
    }
}

/// The errnos counted by name in metrics; any other is `other`, so no
/// error can add a series.
pub const ERRNO_LABELS: [(i32, &str); 35] = [
    (libc::ENOENT, "ENOENT"),
    (libc::EEXIST, "EEXIST"),
    (libc::ENOTEMPTY, "ENOTEMPTY"),
    (libc::ENODATA, "ENODATA"),
    (libc::EAGAIN, "EAGAIN"),
    (libc::EINTR, "EINTR"),
    (libc::ENOTDIR, "ENOTDIR"),
    (libc::EISDIR, "EISDIR"),
    (libc::ELOOP, "ELOOP"),
    (libc::EXDEV, "EXDEV"),
    (libc::EMLINK, "EMLINK"),
    (libc::EBUSY, "EBUSY"),
    (libc::ETXTBSY, "ETXTBSY"),
    (libc::ERANGE, "ERANGE"),
    (libc::E2BIG, "E2BIG"),
    (libc::ENXIO, "ENXIO"),
    (libc::ENOTTY, "ENOTTY"),
    (libc::ENOSYS, "ENOSYS"),
    (libc::EOPNOTSUPP, "EOPNOTSUPP"),
    (libc::ESTALE, "ESTALE"),
    (libc::EBADF, "EBADF"),
    (libc::EACCES, "EACCES"),
    (libc::EPERM, "EPERM"),
    (libc::EROFS, "EROFS"),
    (libc::EINVAL, "EINVAL"),
    (libc::ENAMETOOLONG, "ENAMETOOLONG"),
    (libc::EFBIG, "EFBIG"),
    (libc::ENOSPC, "ENOSPC"),
    (libc::EDQUOT, "EDQUOT"),
    (libc::EIO, "EIO"),
    (libc::EMFILE, "EMFILE"),
    (libc::ENFILE, "ENFILE"),
    (libc::ENOMEM, "ENOMEM"),
    (libc::ETIMEDOUT, "ETIMEDOUT"),
    (0, "other"),
];

/// The index of `errno` in [`ERRNO_LABELS`] (the last, `other`, if it is
/// not named there).
pub fn errno_index(errno: i32) -> usize {
    ERRNO_LABELS[..ERRNO_LABELS.len() - 1]
        .iter()
        .position(|(e, _)| *e == errno)
        .unwrap_or(ERRNO_LABELS.len() - 1)
}

/// The name of `errno` (`ENOENT`), or `other`.
pub fn errno_label(errno: i32) -> &'static str {
    ERRNO_LABELS[errno_index(errno)].1
}

/// SQLite's SQLITE_FULL (13; extended codes keep it in the low byte) or
/// PostgreSQL's disk_full. A SQLSTATE has five characters; SQLite's
/// codes are numbers below 10000.
fn is_full_code(code: &str) -> bool {
    if code.len() == 5 {
        return code == "53100";
    }
    code.parse::<i64>().is_ok_and(|c| c & 0xff == 13)
}

/// Whether an `io::Error` saying ENOSPC is among `e` and its causes.
fn io_enospc_in(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.raw_os_error() == Some(libc::ENOSPC))
        {
            return true;
        }
        next = e.source();
    }
    false
}

fn errno_text(errno: i32) -> impl fmt::Display {
    std::io::Error::from_raw_os_error(errno)
}

/// Shorthands for the common conditions.
pub fn enoent() -> Error {
    Error::posix(libc::ENOENT, "no such file or directory")
}
pub fn eexist() -> Error {
    Error::posix(libc::EEXIST, "file exists")
}
pub fn enotdir() -> Error {
    Error::posix(libc::ENOTDIR, "not a directory")
}
pub fn eisdir() -> Error {
    Error::posix(libc::EISDIR, "is a directory")
}
pub fn enotempty() -> Error {
    Error::posix(libc::ENOTEMPTY, "directory not empty")
}
pub fn einval(reason: &'static str) -> Error {
    Error::posix(libc::EINVAL, reason)
}
pub fn eperm(reason: &'static str) -> Error {
    Error::posix(libc::EPERM, reason)
}
pub fn eacces(reason: &'static str) -> Error {
    Error::posix(libc::EACCES, reason)
}
pub fn enametoolong() -> Error {
    Error::posix(libc::ENAMETOOLONG, "name longer than 255 bytes")
}
pub fn ebadf() -> Error {
    Error::posix(libc::EBADF, "bad file handle")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    /// A database driver's error, as sqlx hands it over.
    #[derive(Debug)]
    struct DbError(&'static str);
    impl fmt::Display for DbError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for DbError {}

    fn db(code: Option<&str>, text: &'static str) -> Error {
        Error::database(code.map(str::to_string), text, DbError(text))
    }

    #[test]
    fn the_level_table() {
        for e in [
            enoent(),
            eexist(),
            enotempty(),
            Error::posix(libc::ENODATA, "no such attribute"),
            Error::posix(libc::EAGAIN, "try again"),
            einval("bad"),
            enametoolong(),
            Error::posix(libc::ERANGE, "buffer too small"),
        ] {
            assert_eq!(e.level(), Level::DEBUG, "{e}");
        }
        for e in [
            eacces("denied"),
            eperm("not yours"),
            Error::posix(libc::EROFS, "read-only mode"),
            Error::Policy("mode change refused".into()),
        ] {
            assert_eq!(e.level(), Level::INFO, "{e}");
        }
        let io = |n| Error::Io(std::io::Error::from_raw_os_error(n));
        for e in [
            Error::posix(libc::ENOSPC, "full"),
            Error::posix(libc::EDQUOT, "quota"),
            io(libc::ENOSPC),
            io(libc::EDQUOT),
            io(libc::EMFILE),
            io(libc::ENOENT),
            db(Some("13"), "database or disk is full"),
            Error::posix(libc::EHOSTDOWN, "odd"),
        ] {
            assert_eq!(e.level(), Level::WARN, "{e}");
        }
        for e in [
            io(libc::EIO),
            Error::Io(std::io::Error::other("odd")),
            Error::posix(libc::EIO, "object missing"),
            Error::meta("corrupt row"),
            db(Some("5"), "database is locked"),
            db(None, "pool timed out"),
        ] {
            assert_eq!(e.level(), Level::ERROR, "{e}");
        }
        // A context changes nothing of it.
        let e = Error::posix(libc::EIO, "lost").with_context(Context::op("read").ino(7));
        assert_eq!((e.level(), e.errno()), (Level::ERROR, libc::EIO));
        let e = enoent().with_context(Context::op("lookup"));
        assert_eq!((e.level(), e.errno()), (Level::DEBUG, libc::ENOENT));
    }

    #[test]
    fn an_uncommitted_change_keeps_the_writers_error() {
        let cause = Arc::new(db(Some("13"), "database or disk is full"));
        let e = Error::Uncommitted(cause.clone()).with_context(Context::op("fsync").ino(3));
        assert!(e.is_disk_full());
        assert_eq!(e.code(), Some("13"));
        assert_eq!(e.errno(), libc::EIO);
        assert_eq!(
            e.to_string(),
            "fsync ino 3: cannot commit metadata: metadata store: database or disk is full"
        );
        let e = Error::Uncommitted(Arc::new(db(Some("5"), "database is locked")));
        assert_eq!((e.level(), e.code()), (Level::ERROR, Some("5")));
        assert!(!e.is_disk_full());
    }

    #[test]
    fn disk_full_is_decided_by_codes() {
        // SQLITE_FULL and an extended code of it; PostgreSQL's disk_full.
        assert!(db(Some("13"), "database or disk is full").is_disk_full());
        assert!(db(Some("269"), "full").is_disk_full());
        assert!(db(Some("53100"), "could not extend file").is_disk_full());
        // ENOSPC under a database error (the driver's I/O failed).
        let io = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(Error::database(None, "io", io).is_disk_full());
        assert!(Error::Io(std::io::Error::from_raw_os_error(libc::ENOSPC)).is_disk_full());
        assert!(Error::posix(libc::ENOSPC, "full").is_disk_full());
        // Words are not codes.
        assert!(!Error::meta("database or disk is full").is_disk_full());
        assert!(!db(Some("5"), "No space left on device").is_disk_full());
        assert!(!db(Some("40001"), "serialization failure").is_disk_full());
        assert!(!db(None, "disk is full").is_disk_full());
        let e = db(Some("13"), "full").with_context(Context::op("mkdir"));
        assert!(e.is_disk_full());
        assert_eq!(e.code(), Some("13"));
        assert_eq!(e.errno(), libc::EIO);
    }

    #[test]
    fn display_holds_context_and_source() {
        let e = Error::Io(std::io::Error::from_raw_os_error(libc::EIO))
            .with_context(Context::op("read").ino(42).path("a/b"));
        let s = e.to_string();
        assert!(
            s.starts_with("read ino 42 \"a/b\": backing store I/O: "),
            "{s}"
        );
        assert!(s.contains("Input/output error"), "{s}");
        assert_eq!(e.report(), s, "a cause already in the text is not repeated");
        // A database error: its driver's error is the source, its code kept.
        let e = db(Some("1555"), "UNIQUE constraint failed").with_context(Context::op("PUT /x"));
        assert_eq!(
            e.to_string(),
            "PUT /x: metadata store: UNIQUE constraint failed"
        );
        let src = std::error::Error::source(&e).expect("a source");
        assert_eq!(src.to_string(), "UNIQUE constraint failed");
        // A second context fills only what the first left out.
        let e = enoent()
            .with_context(Context::op("lookup").ino(1))
            .with_context(Context::op("other").ino(9).path("x"));
        assert_eq!(e.context(), Some(&Context::op("lookup").ino(1).path("x")));
        assert_eq!(e.to_string(), "lookup ino 1 \"x\": no such file or directory (No such file or directory (os error 2))");
        // Without a context the text is what it always was (API bodies).
        assert_eq!(
            enoent().to_string(),
            "no such file or directory (No such file or directory (os error 2))"
        );
        assert_eq!(Error::meta("gone").to_string(), "metadata store: gone");
    }

    #[test]
    fn errno_labels_are_a_closed_set() {
        assert_eq!(errno_label(libc::ENOENT), "ENOENT");
        assert_eq!(errno_label(libc::EIO), "EIO");
        assert_eq!(errno_label(libc::EHOSTDOWN), "other");
        assert_eq!(errno_label(0), "other");
        let mut names: Vec<_> = ERRNO_LABELS.iter().map(|(_, n)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ERRNO_LABELS.len());
    }
}
