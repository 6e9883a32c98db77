//! FUSE over io_uring (Linux 6.14+), added to the vendored fuser for artfs.
//!
//! Opt-in: a filesystem asks for it by adding `InitFlags::FUSE_OVER_IO_URING`
//! to its capabilities in `Filesystem::init`. When the kernel grants it
//! (only if `/sys/module/fuse/parameters/enable_uring` is `Y` at INIT time),
//! `Session::run` starts, besides the classic `/dev/fuse` threads, one
//! thread per *possible* CPU, pinned to that CPU, each with its own io_uring
//! (`IORING_SETUP_SQE128`, mandatory) and `depth` ring entries registered on
//! queue `qid == cpu`. The kernel puts a request on the queue of the CPU the
//! calling task runs on, so the request is served on the caller's CPU.
//!
//! Each ring entry is a header buffer (`fuse_uring_req_header`, 288 bytes)
//! and a payload buffer (at least max(8192, max_write, max_pages * page)).
//! A completed entry holds a request split in three parts: the
//! `fuse_in_header` (`in_out`), the opcode's first argument (`op_in`) and
//! the remaining arguments (payload). We reassemble it into fuser's classic
//! wire layout in a per-thread buffer and dispatch it with fuser's normal
//! request parsing and dispatch; the reply sender (`RingReplySender`)
//! writes the `fuse_out_header` into `in_out`, everything after it into the
//! payload buffer, and submits `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`, which
//! also re-arms the entry. The reply may come from any thread (artfs
//! answers blocking requests from helper threads): pushing to the
//! submission queue is serialized by a mutex, and a reply from another
//! thread than the queue's submits at once (the queue thread's own replies
//! are submitted with its next wait, one syscall per request).
//!
//! The classic `/dev/fuse` threads keep running: FORGET, BATCH_FORGET and
//! INTERRUPT still arrive there, notifications must still be written there
//! (the ring rejects `unique == 0`), and a failed REGISTER makes the kernel
//! fall back to `/dev/fuse` silently.
//!
//! Gotchas (docs/IO_URING.md in artfs): every possible CPU must have a
//! registered queue or every request on the mount hangs; REGISTER needs
//! `sqe->len == 2`; at unmount every armed entry completes with -ENOTCONN.

use std::alloc::Layout;
use std::io;
use std::os::fd::AsRawFd;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::thread::ThreadId;

use io_uring::IoUring;
use io_uring::cqueue;
use io_uring::opcode;
use io_uring::squeue;
use io_uring::types;
use log::debug;
use log::error;
use log::info;
use log::warn;
use parking_lot::Mutex;

use crate::Filesystem;
use crate::channel::Channel;
use crate::channel::ChannelSender;
use crate::ll::fuse_abi as abi;
use crate::request::RequestWithSender;
use crate::session::SessionEventLoop;

/// `FUSE_IO_URING_CMD_REGISTER` (`sqe->cmd_op`).
const CMD_REGISTER: u32 = 1;
/// `FUSE_IO_URING_CMD_COMMIT_AND_FETCH` (`sqe->cmd_op`).
const CMD_COMMIT_AND_FETCH: u32 = 2;

/// `sizeof(struct fuse_uring_req_header)`: in_out[128], op_in[128],
/// `fuse_uring_ent_in_out` (32).
const HEADER_SIZE: usize = 288;
const IN_OUT_OFF: usize = 0;
const OP_IN_OFF: usize = 128;
const OP_IN_MAX: usize = 128;
/// `fuse_uring_ent_in_out { u64 flags; u64 commit_id; u32 payload_sz; u32 padding; u64 reserved }`
const ENT_IN_OUT_OFF: usize = 256;
const COMMIT_ID_OFF: usize = ENT_IN_OUT_OFF + 8;
const PAYLOAD_SZ_OFF: usize = ENT_IN_OUT_OFF + 16;

const IN_HEADER_SIZE: usize = size_of::<abi::fuse_in_header>();
const OUT_HEADER_SIZE: usize = size_of::<abi::fuse_out_header>();

/// Byte offset of `len` in a 128-byte SQE (`struct io_uring_sqe`: opcode u8,
/// flags u8, ioprio u16, fd i32, off u64, addr u64, len u32).
const SQE_LEN_OFF: usize = 24;

/// Parameters of the ring transport, fixed by the INIT reply.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UringConfig {
    /// Size of each entry's payload buffer.
    pub(crate) payload_size: usize,
    /// Ring entries per queue (requests a CPU can have in flight at once).
    pub(crate) depth: u16,
}

/// Default ring entries per queue. Synchronous callers need one; artfs
/// answers some requests from helper threads and background requests
/// (RELEASE) also come over the ring, so a few more.
pub(crate) const DEFAULT_DEPTH: u16 = 8;

/// The CPU ids the kernel may ever schedule on
/// (`/sys/devices/system/cpu/possible`, e.g. `0-1` or `0,2-5`): the kernel
/// creates one queue per possible CPU and waits for all of them.
pub(crate) fn possible_cpus() -> io::Result<usize> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    parse_cpu_list(&s).ok_or_else(|| io::Error::other(format!("cannot parse possible CPUs {s:?}")))
}

/// The number of CPU ids a kernel CPU list (`0-1`, `0,2-5`, `0`) covers:
/// its highest id plus one (queue ids are CPU ids).
fn parse_cpu_list(s: &str) -> Option<usize> {
    let mut max: Option<usize> = None;
    for part in s.trim().split(',') {
        let last = part.rsplit('-').next()?.trim().parse::<usize>().ok()?;
        max = Some(max.map_or(last, |m| m.max(last)));
    }
    max.map(|m| m + 1)
}

/// A zeroed, page-aligned heap buffer (large ones come from fresh mmap'd
/// pages, so untouched parts of a 1 MiB payload buffer cost no memory).
struct Buf {
    ptr: *mut u8,
    layout: Layout,
}

impl Buf {
    fn new(len: usize) -> Buf {
        let layout = Layout::from_size_align(len, 4096).expect("buffer layout");
        // SAFETY: len > 0 (callers pass at least HEADER_SIZE).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Buf { ptr, layout }
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

/// One ring entry: header buffer, payload buffer and the iovecs REGISTER
/// points the kernel at. Between a completion (a request is in it) and
/// the COMMIT_AND_FETCH of its reply the entry belongs to that request,
/// otherwise to the kernel.
struct Ent {
    header: Buf,
    payload: Buf,
    iov: [libc::iovec; 2],
}

/// One queue: one io_uring, serving the requests of one CPU.
pub(crate) struct Queue {
    qid: u16,
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    /// Serializes pushes to the submission queue (replies may come from any
    /// thread). Completions are only ever read by the queue's thread.
    sq_lock: Mutex<()>,
    ents: Box<[Ent]>,
    payload_size: usize,
    dev_fd: RawFd,
    owner: OnceLock<ThreadId>,
    served: AtomicU64,
}

// SAFETY: the raw buffer pointers in `ents` are only written by the one
// party that owns the entry at the time (see `Ent`), and the submission
// queue is only touched under `sq_lock`, the completion queue only by the
// queue thread.
unsafe impl Send for Queue {}
unsafe impl Sync for Queue {}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("qid", &self.qid).finish()
    }
}

impl Queue {
    fn new(qid: u16, dev_fd: RawFd, cfg: UringConfig) -> io::Result<Queue> {
        let depth = u32::from(cfg.depth.max(1));
        // One SQE and one CQE at most per entry at any time.
        let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder()
            .setup_cqsize(depth * 2)
            .build(depth)?;
        let ents = (0..depth)
            .map(|_| {
                let header = Buf::new(4096);
                let payload = Buf::new(cfg.payload_size);
                let iov = [
                    libc::iovec {
                        iov_base: header.ptr.cast(),
                        iov_len: HEADER_SIZE,
                    },
                    libc::iovec {
                        iov_base: payload.ptr.cast(),
                        iov_len: cfg.payload_size,
                    },
                ];
                Ent {
                    header,
                    payload,
                    iov,
                }
            })
            .collect();
        Ok(Queue {
            qid,
            ring,
            sq_lock: Mutex::new(()),
            ents,
            payload_size: cfg.payload_size,
            dev_fd,
            owner: OnceLock::new(),
            served: AtomicU64::new(0),
        })
    }

    /// `struct fuse_uring_cmd_req { u64 flags; u64 commit_id; u16 qid; u8 padding[6] }`
    fn cmd_req(&self, commit_id: u64) -> [u8; 80] {
        let mut cmd = [0u8; 80];
        cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
        cmd[16..18].copy_from_slice(&self.qid.to_ne_bytes());
        cmd
    }

    fn push(&self, sqe: &squeue::Entry128, submit_now: bool) -> io::Result<()> {
        {
            let _g = self.sq_lock.lock();
            // SAFETY: pushes are serialized by sq_lock; the SQE references
            // only buffers that live as long as the queue (the REGISTER
            // iovecs are in `ents`).
            let mut sq = unsafe { self.ring.submission_shared() };
            unsafe { sq.push(sqe) }
                .map_err(|_| io::Error::other("io_uring submission queue full"))?;
            sq.sync();
        }
        if submit_now {
            self.ring.submit()?;
        }
        Ok(())
    }

    fn register(&self, idx: usize) -> io::Result<()> {
        let ent = &self.ents[idx];
        let mut sqe = opcode::UringCmd80::new(types::Fd(self.dev_fd), CMD_REGISTER)
            .cmd(self.cmd_req(0))
            .addr(Some(ent.iov.as_ptr() as u64))
            .build()
            .user_data(idx as u64);
        // The io-uring crate's UringCmd80 has no `len` setter, but REGISTER
        // needs sqe->len == 2 (the number of iovecs; anything else is
        // -EINVAL). Entry128 is #[repr(C)] (a 64-byte io_uring_sqe followed
        // by 64 command bytes), so patch the u32 at byte offset 24.
        // SAFETY: Entry128 is 128 bytes, repr(C), plain data.
        unsafe {
            let bytes = (&mut sqe as *mut squeue::Entry128).cast::<u8>();
            std::ptr::write_unaligned(bytes.add(SQE_LEN_OFF).cast::<u32>(), 2);
        }
        self.push(&sqe, false)
    }

    fn commit(&self, idx: usize, commit_id: u64) -> io::Result<()> {
        let sqe = opcode::UringCmd80::new(types::Fd(self.dev_fd), CMD_COMMIT_AND_FETCH)
            .cmd(self.cmd_req(commit_id))
            .build()
            .user_data(idx as u64);
        // The queue thread submits its own replies with its next wait.
        let on_queue_thread = self.owner.get() == Some(&std::thread::current().id());
        self.push(&sqe, !on_queue_thread)
    }
}

/// Sends the reply of a request that came over a ring entry.
#[derive(Clone, Debug)]
pub(crate) struct RingReplySender {
    queue: Arc<Queue>,
    idx: usize,
    commit_id: u64,
    /// `/dev/fuse`, for backing-file ioctls (passthrough).
    pub(crate) dev: ChannelSender,
}

impl RingReplySender {
    pub(crate) fn send(&self, data: &[io::IoSlice<'_>]) -> io::Result<()> {
        let q = &self.queue;
        let ent = &q.ents[self.idx];
        let total: usize = data.iter().map(|b| b.len()).sum();
        if total < OUT_HEADER_SIZE {
            return Err(io::Error::other("reply shorter than fuse_out_header"));
        }
        let hdr = ent.header.ptr;
        let payload = ent.payload.ptr;
        if total - OUT_HEADER_SIZE > q.payload_size {
            // Does not fit: answer EIO instead (keeping the unique).
            error!(
                "io_uring reply of {} bytes exceeds the {} byte payload buffer",
                total - OUT_HEADER_SIZE,
                q.payload_size
            );
            let mut h = [0u8; OUT_HEADER_SIZE];
            h[0..4].copy_from_slice(&(OUT_HEADER_SIZE as u32).to_ne_bytes());
            h[4..8].copy_from_slice(&(-libc::EIO).to_ne_bytes());
            h[8..16].copy_from_slice(&self.commit_id.to_ne_bytes());
            // SAFETY: this request owns the entry until the commit below.
            unsafe {
                std::ptr::copy_nonoverlapping(h.as_ptr(), hdr.add(IN_OUT_OFF), OUT_HEADER_SIZE);
                std::ptr::write_unaligned(hdr.add(PAYLOAD_SZ_OFF).cast::<u32>(), 0);
            }
            return q.commit(self.idx, self.commit_id);
        }
        // First OUT_HEADER_SIZE bytes into in_out, the rest into the payload.
        let mut pos = 0usize;
        for b in data {
            let mut src: &[u8] = b;
            while !src.is_empty() {
                // SAFETY: this request owns the entry until the commit below;
                // bounds checked above.
                let n = if pos < OUT_HEADER_SIZE {
                    let n = src.len().min(OUT_HEADER_SIZE - pos);
                    unsafe {
                        std::ptr::copy_nonoverlapping(src.as_ptr(), hdr.add(IN_OUT_OFF + pos), n)
                    };
                    n
                } else {
                    let n = src.len();
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            src.as_ptr(),
                            payload.add(pos - OUT_HEADER_SIZE),
                            n,
                        )
                    };
                    n
                };
                pos += n;
                src = &src[n..];
            }
        }
        // SAFETY: as above.
        unsafe {
            std::ptr::write_unaligned(
                hdr.add(PAYLOAD_SZ_OFF).cast::<u32>(),
                (total - OUT_HEADER_SIZE) as u32,
            );
        }
        q.commit(self.idx, self.commit_id)
    }
}

/// The queues for the INIT reply to grant FUSE over io_uring, or `None`
/// (logged) if they cannot be made: the reply must then not ask for it.
pub(crate) fn setup(dev: &Channel, cfg: UringConfig) -> Option<Vec<Arc<Queue>>> {
    match make_queues(dev, cfg) {
        Ok(queues) => {
            info!(
                "FUSE over io_uring: {} queues x {} entries, payload buffers of {} bytes",
                queues.len(),
                cfg.depth,
                cfg.payload_size
            );
            Some(queues)
        }
        Err(e) => {
            warn!("FUSE over io_uring unavailable ({e}); serving over /dev/fuse");
            None
        }
    }
}

/// Sets up one queue per possible CPU (rings and buffers, nothing
/// registered yet); `run_queue` serves each. `FUSER_URING_FAIL_SETUP`
/// (any value, for tests) makes it fail, to test the fallback.
pub(crate) fn make_queues(dev: &Channel, cfg: UringConfig) -> io::Result<Vec<Arc<Queue>>> {
    if std::env::var_os("FUSER_URING_FAIL_SETUP").is_some() {
        return Err(io::Error::other("FUSER_URING_FAIL_SETUP is set"));
    }
    let n = possible_cpus()?;
    let fd = dev.as_fd_raw();
    (0..n)
        .map(|cpu| {
            let qid = u16::try_from(cpu).map_err(|_| io::Error::other("too many CPUs"))?;
            Queue::new(qid, fd, cfg).map(Arc::new)
        })
        .collect()
}

fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: plain libc calls on a local cpu_set_t.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A per-thread buffer for a reassembled request, aligned for
/// `fuse_in_header`.
struct ReqBuf(Vec<u64>);

impl ReqBuf {
    fn new(len: usize) -> ReqBuf {
        ReqBuf(vec![0u64; len.div_ceil(8)])
    }
    fn bytes(&mut self) -> &mut [u8] {
        let len = self.0.len() * 8;
        // SAFETY: u64 storage viewed as bytes.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast::<u8>(), len) }
    }
}

/// Serves one queue until the connection ends (every entry completed with
/// an error, -ENOTCONN at unmount) or REGISTER fails (the kernel then falls
/// back to `/dev/fuse`, which the classic threads serve).
pub(crate) fn run_queue<FS: Filesystem>(
    queue: Arc<Queue>,
    event_loop: SessionEventLoop<FS>,
) -> io::Result<()> {
    let qid = queue.qid;
    if let Err(e) = pin_to_cpu(usize::from(qid)) {
        // A possible but offline CPU: the queue still has to be registered.
        debug!("io_uring queue {qid}: not pinned ({e})");
    }
    let _ = queue.owner.set(std::thread::current().id());
    let depth = queue.ents.len();
    for idx in 0..depth {
        queue.register(idx)?;
    }
    let dev = event_loop.ch.sender();
    let mut reqbuf = ReqBuf::new(IN_HEADER_SIZE + OP_IN_MAX + queue.payload_size);
    let mut dead = 0usize;
    let mut done: Vec<(usize, i32)> = Vec::with_capacity(depth * 2);
    let mut first = true;
    let mut warned = false;
    loop {
        match queue.ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => {
                error!("io_uring queue {qid}: io_uring_enter: {e}");
                return Err(e);
            }
        }
        done.clear();
        {
            // SAFETY: only this thread reads the completion queue.
            let cq = unsafe { queue.ring.completion_shared() };
            for cqe in cq {
                done.push((cqe.user_data() as usize, cqe.result()));
            }
        }
        for &(idx, res) in &done {
            if res < 0 {
                dead += 1;
                let err = io::Error::from_raw_os_error(-res);
                // The end of the connection: unmount (ENOTCONN), abort or
                // the daemon's rings going away (ECONNABORTED).
                if matches!(-res, libc::ENOTCONN | libc::ENODEV | libc::ECONNABORTED) {
                    debug!("io_uring queue {qid} entry {idx}: {err}");
                } else if first && !warned {
                    warned = true;
                    warn!(
                        "io_uring queue {qid}: REGISTER failed ({err}); the kernel serves \
                         this mount over /dev/fuse"
                    );
                } else {
                    error!("io_uring queue {qid} entry {idx}: {err}");
                }
                continue;
            }
            if first {
                info!("FUSE over io_uring: queue {qid} serving requests");
                first = false;
            }
            // A panicking handler must not end this thread: nothing else
            // reads this CPU's completions, so every later request of the
            // CPU would hang. The reply dropped while unwinding answers EIO.
            let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                serve_entry(&queue, idx, &mut reqbuf, &dev, &event_loop)
            }));
            if served.is_err() {
                error!("io_uring queue {qid}: a request handler panicked; answered EIO");
            }
        }
        if dead >= depth {
            info!(
                "io_uring queue {qid}: done after {} requests",
                queue.served.load(Ordering::Relaxed)
            );
            return Ok(());
        }
    }
}

fn serve_entry<FS: Filesystem>(
    queue: &Arc<Queue>,
    idx: usize,
    reqbuf: &mut ReqBuf,
    dev: &ChannelSender,
    event_loop: &SessionEventLoop<FS>,
) {
    queue.served.fetch_add(1, Ordering::Relaxed);
    let ent = &queue.ents[idx];
    let hdr = ent.header.ptr;
    // SAFETY: the kernel filled the entry and hands it to us until our
    // commit; fixed offsets within the 4096-byte header buffer.
    let (in_len, commit_id, payload_sz) = unsafe {
        (
            std::ptr::read_unaligned(hdr.add(IN_OUT_OFF).cast::<u32>()) as usize,
            std::ptr::read_unaligned(hdr.add(COMMIT_ID_OFF).cast::<u64>()),
            std::ptr::read_unaligned(hdr.add(PAYLOAD_SZ_OFF).cast::<u32>()) as usize,
        )
    };
    let sender = RingReplySender {
        queue: queue.clone(),
        idx,
        commit_id,
        dev: dev.clone(),
    };
    // The kernel sets in_header.len to the classic total length, so the
    // size of op_in (the opcode's first argument) is what is left.
    let op_in = in_len.checked_sub(IN_HEADER_SIZE + payload_sz);
    let Some(op_in) = op_in.filter(|&n| n <= OP_IN_MAX && payload_sz <= queue.payload_size) else {
        error!(
            "io_uring queue {}: malformed request (len {in_len}, payload {payload_sz})",
            queue.qid
        );
        reply_errno(&sender, commit_id, libc::EIO);
        return;
    };
    let buf = reqbuf.bytes();
    // SAFETY: bounds checked above; the entry is ours until the commit.
    unsafe {
        std::ptr::copy_nonoverlapping(hdr.add(IN_OUT_OFF), buf.as_mut_ptr(), IN_HEADER_SIZE);
        std::ptr::copy_nonoverlapping(
            hdr.add(OP_IN_OFF),
            buf.as_mut_ptr().add(IN_HEADER_SIZE),
            op_in,
        );
        std::ptr::copy_nonoverlapping(
            ent.payload.ptr,
            buf.as_mut_ptr().add(IN_HEADER_SIZE + op_in),
            payload_sz,
        );
    }
    match RequestWithSender::new_ring(sender.clone(), &buf[..in_len]) {
        Some(req) => req.dispatch(event_loop),
        None => reply_errno(&sender, commit_id, libc::EIO),
    }
}

fn reply_errno(sender: &RingReplySender, unique: u64, errno: i32) {
    let mut h = [0u8; OUT_HEADER_SIZE];
    h[0..4].copy_from_slice(&(OUT_HEADER_SIZE as u32).to_ne_bytes());
    h[4..8].copy_from_slice(&(-errno).to_ne_bytes());
    h[8..16].copy_from_slice(&unique.to_ne_bytes());
    if let Err(e) = sender.send(&[io::IoSlice::new(&h)]) {
        error!("io_uring: cannot send error reply: {e}");
    }
}

impl Channel {
    fn as_fd_raw(&self) -> RawFd {
        std::os::fd::AsFd::as_fd(self).as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::parse_cpu_list;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(2));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0,2-5"), Some(6));
        assert_eq!(parse_cpu_list("0-63"), Some(64));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn layouts() {
        // fuse_uring_req_header: in_out[128], op_in[128], ent_in_out(32).
        assert_eq!(super::HEADER_SIZE, 128 + 128 + 32);
        assert_eq!(size_of::<crate::ll::fuse_abi::fuse_in_header>(), 40);
        assert_eq!(size_of::<crate::ll::fuse_abi::fuse_out_header>(), 16);
        assert_eq!(size_of::<io_uring::squeue::Entry128>(), 128);
    }
}
