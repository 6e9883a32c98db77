//! Helper threads for requests that may block.
//!
//! The session runs one request thread by default: with a single thread the
//! kernel always wakes the same one, the scheduler keeps it on the caller's
//! CPU, and each hand-off costs a context switch instead of a cross-CPU
//! wake-up (a create went from 173 to 144 µs; see docs/ARCHITECTURE.md).
//! Requests that may wait on the disk or on durability (read and write
//! through the daemon, fsync, fsyncdir, fallocate) run here instead, so one
//! slow request never holds up the others; their replies are sent from the
//! helper thread.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;

type Job = Box<dyn FnOnce() + Send>;

pub struct Offload {
    tx: Mutex<Option<Sender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Offload {
    /// Start `n` helper threads (at least one).
    pub fn start(n: usize) -> std::io::Result<Offload> {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..n.max(1))
            .map(|i| {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("artfs-io-{i}"))
                    .spawn(move || work(&rx))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Offload {
            tx: Mutex::new(Some(tx)),
            threads: Mutex::new(threads),
        })
    }

    /// Run `job` on a helper thread; after [`Offload::finish`], right here.
    pub fn run(&self, job: impl FnOnce() + Send + 'static) {
        let job: Job = Box::new(job);
        let job = match &*self.tx.lock() {
            Some(tx) => match tx.send(job) {
                Ok(()) => return,
                Err(e) => e.0,
            },
            None => job,
        };
        job();
    }

    /// Finish every queued job and stop the threads (at session end, before
    /// the store closes).
    pub fn finish(&self) {
        drop(self.tx.lock().take());
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Offload {
    fn drop(&mut self) {
        self.finish();
    }
}

fn work(rx: &Mutex<Receiver<Job>>) {
    loop {
        // Hold the lock only to take a job, not while running it.
        let job = rx.lock().recv();
        match job {
            // A panicking request drops its reply, which answers EIO; the
            // thread stays for the next one.
            Ok(job) => {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
            Err(_) => return,
        }
    }
}
