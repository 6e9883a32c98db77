//! The background threads of a served store, and their one owner.
//!
//! [`super::open_store`] starts every thread through [`Workers::spawn`],
//! which names it and keeps its handle. [`super::Fs::close`] ends them in
//! this order, each after the step that lets it finish:
//!
//! 1. `artfs-standby`, `artfs-follower` (a follower's: `replica`),
//!    `artfs-collector` and `artfs-policy` (periodic): told to stop and
//!    joined first, so no takeover, sweep or mode change races the close
//!    (a follower that never took over stops here);
//! 2. `artfs-objects` (objects made ahead): joined after the pool is
//!    stopped and its unused objects removed;
//! 3. `artfs-sidecars`: joined after the queue is drained and the thread
//!    told to stop;
//! 4. `artfs-writer`: joined after the shutdown that commits everything
//!    staged (it stops on its own if it died);
//! 5. `artfs-lease` (PostgreSQL's writer lease): stopped and joined after
//!    the writer, so the lease is renewed until the last commit, then
//!    released by the store's close;
//! 6. `artfs-hasher` is not joined: it may be hashing a large file and
//!    holds the store only weakly; it ends with the store (what it did not
//!    hash is the next mount's backlog).
//!
//! A store dropped without `close` (offline tools, tests) loses nothing
//! either: every thread but the writer holds it weakly and ends with it.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

pub(crate) const COLLECTOR: &str = "artfs-collector";
pub(crate) const POLICY: &str = "artfs-policy";
pub(crate) const SIDECARS: &str = "artfs-sidecars";
pub(crate) const HASHER: &str = "artfs-hasher";
pub(crate) const WRITER: &str = "artfs-writer";
pub(crate) const OBJECTS: &str = "artfs-objects";
pub(crate) const LEASE: &str = "artfs-lease";
pub(crate) const FOLLOWER: &str = "artfs-follower";
pub(crate) const STANDBY: &str = "artfs-standby";

/// A stop signal the periodic threads sleep on.
#[derive(Default)]
pub struct Stop {
    stopping: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    /// Sleep for `d` unless told to stop meanwhile. False once told to
    /// stop: the thread should end.
    pub fn sleep(&self, d: Duration) -> bool {
        let mut s = self.stopping.lock();
        if !*s {
            self.wake.wait_for(&mut s, d);
        }
        !*s
    }

    fn stop(&self) {
        *self.stopping.lock() = true;
        self.wake.notify_all();
    }
}

/// The named threads of one store and their handles.
#[derive(Default)]
pub struct Workers {
    /// Ends the periodic threads (collector, policy).
    periodic: Arc<Stop>,
    /// Ends the lease's heartbeat, after the writer.
    lease: Arc<Stop>,
    threads: Mutex<Vec<(&'static str, JoinHandle<()>)>>,
}

impl Workers {
    /// Start thread `name` running `f`, keeping its handle.
    pub fn spawn(
        &self,
        name: &'static str,
        f: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<()> {
        let h = std::thread::Builder::new().name(name.into()).spawn(f)?;
        self.threads.lock().push((name, h));
        Ok(())
    }

    /// The stop signal of the periodic threads, for them to sleep on.
    pub fn periodic(&self) -> Arc<Stop> {
        self.periodic.clone()
    }

    /// The stop signal of the lease's heartbeat.
    pub fn lease(&self) -> Arc<Stop> {
        self.lease.clone()
    }

    /// Stop the lease's heartbeat and wait for it (step 5).
    pub fn stop_lease(&self) {
        self.lease.stop();
        self.join(LEASE);
    }

    /// Tell the periodic threads to stop, without waiting (a thread that
    /// sleeps on something else is then woken by its owner).
    pub fn signal_periodic(&self) {
        self.periodic.stop();
    }

    /// Tell the periodic threads to stop and wait for them (step 1).
    pub fn stop_periodic(&self) {
        self.periodic.stop();
        // A standby taking over starts the writer's threads: it ends first.
        self.join(STANDBY);
        self.join(FOLLOWER);
        self.join(COLLECTOR);
        self.join(POLICY);
    }

    /// Wait for thread `name` to end; its own stop must have been given.
    /// Never joins the calling thread.
    pub fn join(&self, name: &str) {
        let h = {
            let mut t = self.threads.lock();
            match t.iter().position(|(n, _)| *n == name) {
                Some(i) => t.remove(i).1,
                None => return,
            }
        };
        if h.thread().id() == std::thread::current().id() {
            return;
        }
        if h.join().is_err() {
            tracing::warn!(thread = name, "a background thread panicked");
        }
    }
}
