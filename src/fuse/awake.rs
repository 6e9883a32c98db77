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
                // Only a weak reference between naps, so the thread ends
                // with the daemon.
                while let Some(k) = weak.upgrade() {
                    if k.park(Duration::from_secs(1)) {
                        k.spin();
                    }
                }
            })?;
        Ok(Some(k))
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// A request arrived (called on every request; two atomics when busy).
    #[inline]
    pub fn ping(&self) {
        self.last.store(self.now(), Ordering::Relaxed);
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

    fn spin(&self) {
        let window = self.window.as_nanos() as u64;
        let quiet = || self.now().saturating_sub(self.last.load(Ordering::Relaxed)) >= window;
        loop {
            while !quiet() {
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
