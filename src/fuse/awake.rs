//! Keeps one CPU awake while requests arrive in quick succession.
//!
//! Every FUSE request is two hand-offs: the caller sleeps while a daemon
//! thread wakes up, then the daemon replies and the caller wakes up again.
//! Waking a thread on an idle CPU can cost far more than the request
//! itself: where idle CPUs halt (virtual machines without guest halt
//! polling, deep C-states), a pipe round trip between two processes on
//! different CPUs took 44 µs on the reference machine, and 5 µs when a
//! third thread kept one CPU busy. So while requests keep coming, a
//! lowest-priority thread spins (yielding) for `window` after the last
//! one; hand-offs then land on a running CPU. It sleeps once the window
//! passes with no request: an idle daemon uses no CPU, and a busy one
//! spends at most `window` of one CPU per burst, only on time that would
//! otherwise be idle.
//!
//! The spinner keeps off the CPU the last request was served on: the
//! caller and the daemon thread then tend to share that CPU (hand-offs on
//! one CPU cost no wake-up of another), while the spinner keeps the other
//! CPU from looking idle to the scheduler. Cold `stat` after a cache drop
//! (one LOOKUP each) went from about 45 µs to about 16 µs at the median.
//!
//! Measured alternatives (metadata bench, 2 CPUs): two spinners, or one
//! under SCHED_IDLE (which the scheduler counts as an idle CPU and so
//! wakes threads onto), did worse than one nice-19 spinner that yields.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

pub struct KeepAwake {
    start: Instant,
    /// Nanoseconds since `start` of the last request.
    last: AtomicU64,
    /// The spinner is parked: the next request must wake it.
    parked: AtomicBool,
    /// Spinners should run (set by a request that found them parked).
    active: Mutex<bool>,
    cv: Condvar,
    window: Duration,
    /// The CPU the last request was served on.
    request_cpu: std::sync::atomic::AtomicI32,
}

impl KeepAwake {
    /// Start the spinner thread; `None` when `window` is zero (disabled).
    pub fn start(window: Duration) -> std::io::Result<Option<Arc<KeepAwake>>> {
        if window.is_zero() {
            return Ok(None);
        }
        let k = Arc::new(KeepAwake {
            start: Instant::now(),
            last: AtomicU64::new(0),
            parked: AtomicBool::new(true),
            active: Mutex::new(false),
            cv: Condvar::new(),
            window,
            request_cpu: (-1).into(),
        });
        let weak = Arc::downgrade(&k);
        std::thread::Builder::new()
            .name("artfs-awake".into())
            .spawn(move || {
                // Lowest priority: it only ever fills time that would be idle.
                // SAFETY: plain syscall on the calling thread's own id.
                unsafe {
                    let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                    libc::setpriority(libc::PRIO_PROCESS, tid, 19);
                }
                // The CPUs the daemon was given; the spinner moves within them.
                let allowed = affinity();
                // Only a weak reference between naps, so the thread ends
                // with the daemon.
                while let Some(k) = weak.upgrade() {
                    if k.park(Duration::from_secs(1)) {
                        k.spin(allowed.as_ref());
                    }
                }
            })?;
        Ok(Some(k))
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// A request arrived (called on every request; two atomics when busy).
    /// Requests on FUSE-over-io_uring queue threads do not count: each
    /// such thread is pinned to its caller's CPU, so there is no hand-off
    /// to another CPU to speed up, and a spinner would only take the CPU
    /// the writer and the database threads need.
    #[inline]
    pub fn ping(&self) {
        if super::on_ring_thread() {
            return;
        }
        self.last.store(self.now(), Ordering::Relaxed);
        // SAFETY: sched_getcpu has no preconditions (vDSO, no syscall).
        let cpu = unsafe { libc::sched_getcpu() };
        self.request_cpu.store(cpu, Ordering::Relaxed);
        if self.parked.load(Ordering::Relaxed) && self.parked.swap(false, Ordering::AcqRel) {
            *self.active.lock() = true;
            self.cv.notify_one();
        }
    }

    /// Sleep until a request arrives (true) or `nap` passes (false).
    fn park(&self, nap: Duration) -> bool {
        let mut active = self.active.lock();
        if !*active {
            self.cv.wait_for(&mut active, nap);
        }
        *active
    }

    fn spin(&self, allowed: Option<&libc::cpu_set_t>) {
        let window = self.window.as_nanos() as u64;
        let quiet = || self.now().saturating_sub(self.last.load(Ordering::Relaxed)) >= window;
        let mut avoiding = -1;
        loop {
            while !quiet() {
                // Keep off the CPU requests are served on: the caller and
                // the daemon thread then share it (cheap same-CPU hand-offs)
                // while this one keeps another CPU from looking idle.
                let cpu = self.request_cpu.load(Ordering::Relaxed);
                if cpu != avoiding && (0..libc::CPU_SETSIZE).contains(&cpu) {
                    if let Some(allowed) = allowed {
                        avoid_cpu(allowed, cpu);
                    }
                    avoiding = cpu;
                }
                std::thread::yield_now();
            }
            *self.active.lock() = false;
            self.parked.store(true, Ordering::Release);
            // A request that came in just before parking must not be missed.
            if !quiet() && self.parked.swap(false, Ordering::AcqRel) {
                *self.active.lock() = true;
                continue;
            }
            return;
        }
    }
}

/// The CPUs the calling thread may run on.
fn affinity() -> Option<libc::cpu_set_t> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the call fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        (libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) == 0).then_some(set)
    }
}

/// Let the calling thread run on the `allowed` CPUs but `cpu` (unless that
/// leaves none).
fn avoid_cpu(allowed: &libc::cpu_set_t, cpu: i32) {
    let mut set = *allowed;
    // SAFETY: the set is a valid cpu_set_t; the libc macros bound-check
    // nothing but `cpu` comes from sched_getcpu, below CPU_SETSIZE; the
    // call affects the calling thread only.
    unsafe {
        libc::CPU_CLR(cpu as usize, &mut set);
        if libc::CPU_COUNT(&set) == 0 {
            return;
        }
        libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
    }
}
