//! Passthrough writes under a capacity (`--capacity-passthrough`).
//!
//! Through passthrough the kernel writes the object without asking the
//! daemon, so a capacity could not be checked, and a capacity sends every
//! write through the daemon (about two-fifths of the backing filesystem's
//! speed; see `FuseFs::backing`). fanotify's pre-content events (Linux
//! 6.14) ask first: once an object is marked (`FAN_PRE_ACCESS`), every
//! read or write through a file opened on it *afterwards* waits, with the
//! byte range it touches, for this guard's answer. So the object of a file opened for writing is
//! marked before its backing file is opened, and an access that could grow
//! the file past its recorded size asks the core for the growth, the same
//! exact reservation a write through the daemon makes
//! ([`Fs::reserve_growth`]). Refused, the write fails with the core's
//! errno (ENOSPC) before a byte lands. The last close records the real
//! size, as for any passthrough writer: usage is exact at commit.
//!
//! What the events leave open, and the answers (docs/SEMANTICS.md):
//! - The range is page-rounded, and an `O_APPEND` write reports the
//!   descriptor's position, not the end it writes at; whether a
//!   descriptor appends can change (fcntl) without the daemon hearing. So
//!   the growth asked for is the most the access could add: its rounded
//!   end, or the size plus its length, whichever is larger. Near a full
//!   store a write may be refused a little early (by at most its own
//!   length), never let past.
//! - While over 1 GiB of the capacity is free, a file holds 8 MiB beyond
//!   its size from the open, and growth past it reserves 8 MiB beyond the
//!   write (`AHEAD`), so a sequential writer is decided once per 8 MiB,
//!   not per write; the reader thread answers the writes between.
//!   What is held counts as used until the last close gives back the
//!   rest: near a full store, files open for writing may hold up to 8 MiB
//!   each that another writer is refused.
//! - Reads raise the same event. One the core refuses is let through when
//!   its thread is blocked in a read(2)-family call: a read grows nothing.
//! - The daemon's own accesses (hashing, sending) are answered at once, by
//!   the thread that reads the events, so they never wait behind a
//!   reservation (which takes the core's locks).
//! - splice(2) and sendfile(2) into the file reach the object without an
//!   event (the kernel's `backing_file_splice_write` checks nothing), so
//!   they are counted only at the close: they can pass the capacity. This
//!   is why the guard is asked for, not the default.
//! - Only the file's first open gets the mark: a writer of a file readers
//!   opened first (by passthrough, unmarked) joins them served by the
//!   daemon, as without the guard.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::mpsc;
use std::sync::Arc;

use parking_lot::Mutex;

use super::awake::KeepAwake;
use crate::core::Fs;

/// Linux 6.14's pre-content event (not in libc yet).
const FAN_PRE_ACCESS: u64 = 0x0010_0000;
/// The info record carrying an event's byte range.
const FAN_EVENT_INFO_TYPE_RANGE: u8 = 6;
/// A refusal with an errno (`FAN_DENY_ERRNO`, Linux 6.14).
fn deny_with(errno: i32) -> u32 {
    // The errnos a pre-content answer may carry (fanotify_is_valid_errno).
    let errno = match errno {
        libc::ENOSPC | libc::EDQUOT | libc::EPERM | libc::EIO | libc::EBUSY | libc::EAGAIN => errno,
        _ => libc::EIO,
    };
    libc::FAN_DENY | ((errno as u32 & 0xff) << 24)
}

/// What a writer growing its file reserves beyond the write at hand...
const AHEAD: u64 = 8 << 20;
/// ...while at least this much of the capacity is free (so what writers
/// hold ahead is small beside it). The last close gives back what was
/// not used.
const AHEAD_WHEN_FREE: u64 = 1 << 30;

/// What to reserve beyond a growing file's write: with room to spare a
/// little ahead, so a sequential writer is decided once per AHEAD bytes,
/// not per write (the reader thread answers the writes in between); short
/// of room, nothing beyond what is asked.
fn ahead(fs: &Fs) -> u64 {
    match fs.capacity() {
        Some(cap) if cap.saturating_sub(fs.usage().0) >= AHEAD_WHEN_FREE => AHEAD,
        _ => 0,
    }
}

/// One event, as the reader thread hands it to the deciding thread.
struct Event {
    fd: OwnedFd,
    tid: i32,
    offset: u64,
    len: u64,
}

/// An object being written through a guarded backing file.
struct Watched {
    ino: u64,
    /// The object, open (a duplicate of the first handle's descriptor,
    /// which may be closed first): the mark is removed through it.
    object: File,
    /// The size its checked writes may have grown it to: a larger object
    /// at the close grew unchecked (splice, sendfile).
    granted: u64,
}

pub struct WriteGuard {
    fan: Arc<OwnedFd>,
    /// By the object's (device, inode number).
    watched: Arc<Watch>,
    /// By artfs inode, the key above.
    keys: Mutex<HashMap<u64, (u64, u64)>>,
    fs: Arc<Fs>,
}

impl WriteGuard {
    /// A fanotify group of the pre-content class, and its two threads.
    /// Fails where the kernel has no pre-content events or the daemon
    /// lacks CAP_SYS_ADMIN.
    /// `awake` is pinged at every event: each is two hand-offs, as a FUSE
    /// request is, and as costly from an idle CPU (see `awake`).
    pub fn start(fs: Arc<Fs>, awake: Option<Arc<KeepAwake>>) -> io::Result<WriteGuard> {
        let flags = libc::FAN_CLASS_PRE_CONTENT | libc::FAN_CLOEXEC | libc::FAN_REPORT_TID;
        let event_flags = (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as u32;
        // SAFETY: plain syscall; the descriptor is owned below.
        let fd = unsafe { libc::fanotify_init(flags, event_flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fanotify_init returned a fresh descriptor.
        let fan = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let watched: Arc<Watch> = Arc::default();
        let (tx, rx) = mpsc::channel::<Event>();
        {
            let (fan, watched, fs) = (fan.clone(), watched.clone(), fs.clone());
            std::thread::Builder::new()
                .name("artfs-write-guard".into())
                .spawn(move || read_events(&fan, &fs, &watched, &tx, awake.as_deref()))?;
        }
        {
            let (fan, watched, fs) = (fan.clone(), watched.clone(), fs.clone());
            std::thread::Builder::new()
                .name("artfs-write-grant".into())
                .spawn(move || {
                    for ev in rx {
                        // Every event is answered, even if deciding
                        // panics: its writer waits until it is.
                        let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            decide(&fs, &watched, &ev)
                        }))
                        .unwrap_or_else(|_| deny_with(libc::EIO));
                        respond(&fan, &ev.fd, answer);
                    }
                })?;
        }
        Ok(WriteGuard {
            fan,
            watched,
            keys: Mutex::default(),
            fs,
        })
    }

    /// Mark the object `file` (inode `ino`) and open the file the kernel
    /// is to write it through: opened after the mark, its accesses wait
    /// for the guard. Fails where the object's filesystem takes no
    /// pre-content marks (the caller then serves the handle itself).
    pub fn watch(&self, ino: u64, file: &File) -> io::Result<File> {
        let object = file.try_clone()?;
        let m = object.metadata()?;
        let key = (m.dev(), m.ino());
        mark(&self.fan, libc::FAN_MARK_ADD, &object)?;
        let granted = m.len();
        // A new open of the object, after the mark (a duplicate would
        // share the handle's open file, which has no pre-content events).
        let reopened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/self/fd/{}", object.as_raw_fd()));
        match reopened {
            Ok(f) => {
                // Held ahead from the start (when there is room): a new
                // file's first writes are then answered by the reader
                // thread, with no hop to the deciding one.
                let ahead = ahead(&self.fs);
                if ahead > 0 {
                    let _ = self.fs.reserve_growth(ino, granted.saturating_add(ahead));
                }
                let w = Watched {
                    ino,
                    object,
                    granted,
                };
                self.watched.lock().insert(key, w);
                self.keys.lock().insert(ino, key);
                Ok(f)
            }
            Err(e) => {
                let _ = mark(&self.fan, libc::FAN_MARK_REMOVE, &object);
                Err(e)
            }
        }
    }

    /// The last passthrough handle of `ino` is closed: remove its mark.
    pub fn unwatch(&self, ino: u64) {
        let Some(key) = self.keys.lock().remove(&ino) else {
            return;
        };
        // Taken out first: the lock is not held across the syscalls.
        let w = self.watched.lock().remove(&key);
        if let Some(w) = w {
            // The object may be gone (unlinked, its inode evicted, which
            // removes the mark): nothing to undo then.
            let _ = mark(&self.fan, libc::FAN_MARK_REMOVE, &w.object);
            let size = w.object.metadata().map_or(0, |m| m.len());
            if size > w.granted {
                tracing::warn!(
                    ino,
                    unchecked = size - w.granted,
                    "a file written through passthrough grew past what its checked writes \
                     could reach (sendfile or splice, which the capacity check cannot see)"
                );
            }
        }
    }
}

fn mark(fan: &OwnedFd, op: libc::c_uint, object: &File) -> io::Result<()> {
    // SAFETY: both descriptors are open; a null path marks `object` itself.
    let r = unsafe {
        libc::fanotify_mark(
            fan.as_raw_fd(),
            op,
            FAN_PRE_ACCESS,
            object.as_raw_fd(),
            std::ptr::null(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn respond(fan: &OwnedFd, fd: &OwnedFd, response: u32) {
    let r = libc::fanotify_response {
        fd: fd.as_raw_fd(),
        response,
    };
    // SAFETY: writes one plain struct to the group's descriptor.
    let n = unsafe {
        libc::write(
            fan.as_raw_fd(),
            (&r as *const libc::fanotify_response).cast(),
            std::mem::size_of::<libc::fanotify_response>(),
        )
    };
    if n < 0 {
        tracing::warn!(error = %io::Error::last_os_error(), "write guard: answering an event failed");
    }
}

/// The reader thread: the daemon's own accesses are let through here, at
/// once, and so are the accesses the file's recorded size already covers
/// (overwrites, reads), as far as the core answers without waiting; the
/// others (growth) go to the deciding thread, which may wait on the
/// core's locks.
fn read_events(
    fan: &OwnedFd,
    fs: &Fs,
    watched: &Watch,
    tx: &mpsc::Sender<Event>,
    awake: Option<&KeepAwake>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: reads into a buffer we own.
        let n = unsafe { libc::read(fan.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            // Never stop: the writers that wait would wait for ever.
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                tracing::error!(error = %e, "write guard: reading events failed; retrying");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            continue;
        }
        if let Some(a) = awake {
            a.ping();
        }
        let mut at = 0usize;
        let n = n as usize;
        while at + std::mem::size_of::<libc::fanotify_event_metadata>() <= n {
            // SAFETY: the kernel wrote whole records; read unaligned.
            let m: libc::fanotify_event_metadata =
                unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
            let len = m.event_len as usize;
            if len == 0 || at + len > n {
                break;
            }
            let (offset, count) = range_of(&buf[at + m.metadata_len as usize..at + len]);
            at += len;
            if m.fd < 0 {
                continue;
            }
            // SAFETY: the event's descriptor is ours to close.
            let fd = unsafe { OwnedFd::from_raw_fd(m.fd) };
            if own_thread(m.pid) {
                respond(fan, &fd, libc::FAN_ALLOW);
                continue;
            }
            let ev = Event {
                fd,
                tid: m.pid,
                offset,
                len: count,
            };
            if let Some((key, ino, end)) = growth_of(watched, &ev) {
                if fs.growth_covered(ino, end) == Some(true) {
                    granted(watched, key, end);
                    respond(fan, &ev.fd, libc::FAN_ALLOW);
                    continue;
                }
            }
            if let Err(mpsc::SendError(ev)) = tx.send(ev) {
                respond(fan, &ev.fd, deny_with(libc::EIO));
            }
        }
    }
}

type Watch = Mutex<HashMap<(u64, u64), Watched>>;

/// The watched object an event is about (its key and inode) and the most
/// the access could grow it to (see the module doc); `None` when it is
/// not watched (any more) or cannot be examined.
fn growth_of(watched: &Watch, ev: &Event) -> Option<((u64, u64), u64, u64)> {
    // SAFETY: fstat into a zeroed struct, on a descriptor we hold.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(ev.fd.as_raw_fd(), &mut st) } < 0 {
        return None;
    }
    let key = (st.st_dev, st.st_ino);
    let ino = watched.lock().get(&key).map(|w| w.ino)?;
    let end = ev
        .offset
        .saturating_add(ev.len)
        .max((st.st_size as u64).saturating_add(ev.len));
    Some((key, ino, end))
}

/// Note that a checked access may have grown the object to `end`.
fn granted(watched: &Watch, key: (u64, u64), end: u64) {
    if let Some(w) = watched.lock().get_mut(&key) {
        w.granted = w.granted.max(end);
    }
}

/// The (offset, count) of an event's range record; (0, 0) without one.
fn range_of(mut info: &[u8]) -> (u64, u64) {
    while info.len() >= 4 {
        let (kind, len) = (info[0], u16::from_ne_bytes([info[2], info[3]]) as usize);
        if len < 4 || len > info.len() {
            break;
        }
        if kind == FAN_EVENT_INFO_TYPE_RANGE && len >= 24 {
            let word = |i: usize| u64::from_ne_bytes(info[i..i + 8].try_into().expect("8 bytes"));
            return (word(8), word(16));
        }
        info = &info[len..];
    }
    (0, 0)
}

/// Whether `tid` is a thread of this process: a signal 0 sent to it as a
/// member of our thread group reaches it only then (cheaper than a /proc
/// lookup, on every event).
fn own_thread(tid: i32) -> bool {
    // SAFETY: signal 0 only checks that the target exists.
    unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, 0) == 0 }
}

/// Whether thread `tid` is blocked in a call that only reads.
fn in_read_call(tid: i32) -> bool {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{tid}/syscall")) else {
        return false;
    };
    let Some(nr) = s
        .split_whitespace()
        .next()
        .and_then(|n| n.parse::<i64>().ok())
    else {
        return false;
    };
    [
        libc::SYS_read,
        libc::SYS_pread64,
        libc::SYS_readv,
        libc::SYS_preadv,
        libc::SYS_preadv2,
    ]
    .contains(&nr)
}

/// Allow, or refuse with the core's errno, an access by another process.
fn decide(fs: &Fs, watched: &Watch, ev: &Event) -> u32 {
    let Some((key, ino, end)) = growth_of(watched, ev) else {
        // Marked no more (its last handle closed while this waited), or
        // not examinable: nothing is known to check it against.
        return libc::FAN_ALLOW;
    };
    let reserved = fs.reserve_growth_ahead(ino, end, ahead(fs));
    match reserved {
        Ok(()) => {
            granted(watched, key, end);
            libc::FAN_ALLOW
        }
        Err(_) if in_read_call(ev.tid) => libc::FAN_ALLOW,
        Err(e) => {
            tracing::debug!(ino, end, error = %e, "write guard: growth refused");
            deny_with(e.errno())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_record_is_found_among_others() {
        let mut info = Vec::new();
        // A record of another type first (a pidfd: header and an int).
        info.extend_from_slice(&[4, 0, 8, 0]);
        info.extend_from_slice(&7i32.to_ne_bytes());
        // The range: header, padding, offset, count.
        info.extend_from_slice(&[FAN_EVENT_INFO_TYPE_RANGE, 0, 24, 0]);
        info.extend_from_slice(&[0; 4]);
        info.extend_from_slice(&4096u64.to_ne_bytes());
        info.extend_from_slice(&8192u64.to_ne_bytes());
        assert_eq!(range_of(&info), (4096, 8192));
        assert_eq!(range_of(&info[..8]), (0, 0));
        // A header claiming more than is there is not read past.
        assert_eq!(
            range_of(&[FAN_EVENT_INFO_TYPE_RANGE, 0, 24, 0, 1, 2]),
            (0, 0)
        );
    }

    #[test]
    fn refusals_carry_an_errno_fanotify_accepts() {
        assert_eq!(deny_with(libc::ENOSPC), libc::FAN_DENY | (28 << 24));
        assert_eq!(deny_with(libc::EDQUOT) >> 24, libc::EDQUOT as u32);
        // Others would make the kernel reject the answer: EIO instead.
        assert_eq!(deny_with(libc::EINVAL) >> 24, libc::EIO as u32);
    }

    #[test]
    fn own_threads_are_told_from_others() {
        // SAFETY: gettid has no preconditions.
        let me = unsafe { libc::gettid() };
        assert!(own_thread(me));
        let other = std::thread::spawn(|| unsafe { libc::gettid() });
        let other = other.join().unwrap();
        // Exited: no longer a thread of ours.
        assert!(!own_thread(other));
        // Another process's thread (init).
        assert!(!own_thread(1));
    }
}
