//! systemd's service notifications (sd_notify(3)) for `Type=notify` units:
//! READY=1 once the mount serves, STATUS= lines, STOPPING=1, WATCHDOG=1
//! pings and EXTEND_TIMEOUT_USEC during a long recovery. (Not to be
//! confused with `fuse::notify`, which talks to the kernel's caches.)
//!
//! A few lines over std's `UnixDatagram` rather than the `sd-notify`
//! crate: the protocol is one datagram of `KEY=VALUE` lines to the socket
//! named by `NOTIFY_SOCKET` (a path, or `@name` for an abstract socket),
//! std covers both address kinds, and no dependency is added for it.
//!
//! Everything here is best effort: without `NOTIFY_SOCKET` each call does
//! nothing, and a failure to send is logged once and never fails the mount.
//! `NOTIFY_SOCKET` is left in the environment: the daemon starts no
//! children that could misuse it.
//!
//! The same socket serves the mount helper (`artfs BACKING MNT -o ...`),
//! which waits for READY=1 and then exits.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

struct Socket {
    sock: UnixDatagram,
    addr: SocketAddr,
}

static SOCKET: OnceLock<Option<Socket>> = OnceLock::new();
/// A send failed already (logged once only).
static FAILED: AtomicBool = AtomicBool::new(false);
/// STOPPING=1 was sent (at most once).
static STOPPING: AtomicBool = AtomicBool::new(false);
/// The mount helper that started us has gone: nobody listens any more.
static HELPER_GONE: AtomicBool = AtomicBool::new(false);

fn socket() -> Option<&'static Socket> {
    SOCKET
        .get_or_init(|| {
            let path = std::env::var_os("NOTIFY_SOCKET")?;
            match open(path.as_bytes()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, socket = ?path,
                        "NOTIFY_SOCKET is not usable; not notifying systemd");
                    None
                }
            }
        })
        .as_ref()
}

fn open(path: &[u8]) -> std::io::Result<Socket> {
    use std::os::linux::net::SocketAddrExt;
    let addr = if let Some(name) = path.strip_prefix(b"@") {
        SocketAddr::from_abstract_name(name)?
    } else if path.starts_with(b"/") {
        SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(path))?
    } else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "neither an absolute path nor an abstract @name",
        ));
    };
    Ok(Socket {
        sock: UnixDatagram::unbound()?,
        addr,
    })
}

/// Whether systemd (or a test) asked for notifications.
pub fn enabled() -> bool {
    socket().is_some()
}

/// Send `KEY=VALUE` lines as one datagram. False if not sent.
pub fn send(state: &str) -> bool {
    let Some(s) = socket().filter(|_| !HELPER_GONE.load(Ordering::Relaxed)) else {
        return false;
    };
    match s.sock.send_to_addr(state.as_bytes(), &s.addr) {
        Ok(_) => true,
        Err(e) => {
            if !FAILED.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, "cannot notify systemd (logged once)");
            }
            false
        }
    }
}

/// One STATUS= value: a single line.
fn line(status: &str) -> String {
    status.replace('\n', " ")
}

/// STATUS=: what the daemon is doing, shown by `systemctl status`.
pub fn status(status: &str) {
    send(&format!("STATUS={}", line(status)));
}

/// READY=1 with a status: the mount serves requests.
pub fn ready(status: &str) {
    send(&format!("READY=1\nSTATUS={}", line(status)));
    if let Some(how) = std::env::var_os(MOUNT_HELPER) {
        // The helper exits now: its socket goes, and its pipe if it
        // relayed our stderr (`eprintln!` would panic on a closed pipe).
        HELPER_GONE.store(true, Ordering::Relaxed);
        if how == RELAY {
            detach_stdio();
        }
    }
}

/// Set by the mount helper (`crate::mount_helper`) on the daemon it
/// starts: it listens only until READY=1, then exits. [`RELAY`] when
/// stdout and stderr are its pipe.
pub const MOUNT_HELPER: &str = "ARTFS_MOUNT_HELPER";
/// The value of [`MOUNT_HELPER`] when the helper relays stderr.
pub const RELAY: &str = "relay";

/// Point stdout and stderr at /dev/null. Best effort.
fn detach_stdio() {
    use std::os::fd::AsRawFd;
    let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") else {
        return;
    };
    // SAFETY: dup2 onto the standard descriptors; `null` stays open
    // through the calls.
    unsafe {
        libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO);
        libc::dup2(null.as_raw_fd(), libc::STDERR_FILENO);
    }
}

/// STOPPING=1 with a status (sent once; later calls only update STATUS).
pub fn stopping(status: &str) {
    if STOPPING.swap(true, Ordering::AcqRel) {
        self::status(status);
    } else {
        send(&format!("STOPPING=1\nSTATUS={}", line(status)));
    }
}

/// How often to send WATCHDOG=1: half of `WATCHDOG_USEC`, when it is set
/// for this process (`WATCHDOG_PID`, when given, must be ours).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

/// Each extension asks for this much more start time ...
const EXTEND_BY: Duration = Duration::from_secs(30);
/// ... and is sent this often while the guard lives ...
const EXTEND_EVERY: Duration = Duration::from_secs(10);
/// ... for at most this long: a recovery stuck for good must still hit a
/// timeout rather than be extended for ever.
const EXTEND_MAX: Duration = Duration::from_secs(3600);

/// While alive (during recovery), keeps asking systemd for more start
/// time with EXTEND_TIMEOUT_USEC. Dropping it stops the requests.
pub struct Extender(Option<std::sync::mpsc::Sender<()>>);

impl Extender {
    pub fn start() -> Extender {
        if !enabled() {
            return Extender(None);
        }
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let began = Instant::now();
        let spawned = std::thread::Builder::new()
            .name("artfs-extend".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    rx.recv_timeout(EXTEND_EVERY)
                {
                    if began.elapsed() > EXTEND_MAX {
                        break;
                    }
                    send(&format!(
                        "EXTEND_TIMEOUT_USEC={}\nSTATUS=recovering for {} s",
                        EXTEND_BY.as_micros(),
                        began.elapsed().as_secs()
                    ));
                }
            });
        Extender(spawned.ok().map(|_| tx))
    }
}

impl Drop for Extender {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert!(open(b"relative/path").is_err());
        assert!(open(b"/run/systemd/notify").is_ok());
        assert!(open(b"@artfs-test").is_ok());
        assert_eq!(line("a\nb"), "a b");
    }
}
