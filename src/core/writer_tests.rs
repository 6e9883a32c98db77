//! The writer's batching, driven by hand on a real store (SQLite in a
//! temporary BACKING) opened without its threads: each test gathers and
//! commits exactly when it says so.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{Next, Run};
use crate::core::namespace::NewNode;
use crate::core::open::{open_unstarted, StoreLock};
use crate::core::options::StoreOptions;
use crate::core::Fs;
use crate::types::journal;
use crate::types::{Caller, ROOT_INO};

/// A store with no thread running, its first inode reservation
/// committed. Field order: the store goes first,
/// then its lock, the runtime and the directory.
struct Store {
    fs: Arc<Fs>,
    _lock: StoreLock,
    _rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn store() -> Store {
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (fs, lock) =
        open_unstarted(&StoreOptions::new(dir.path()), rt.handle().clone()).expect("open");
    let fs = Arc::new(fs);
    // Commit the first inode reservation: allocating a number waits for
    // it, and no writer thread runs here.
    round(&mut Run::new(fs.clone()));
    Store {
        fs,
        _lock: lock,
        _rt: rt,
        _dir: dir,
    }
}

fn mkdir(fs: &Fs, name: &str) -> u64 {
    fs.create_node(
        &Caller::root(),
        ROOT_INO,
        name.as_bytes(),
        NewNode::Dir,
        0o755,
        0o022,
    )
    .expect("mkdir")
    .inode
    .ino
}

/// Whether the database (not the overlay) holds `name` in the root.
fn committed(fs: &Fs, name: &str) -> bool {
    fs.meta
        .lookup(ROOT_INO, name.as_bytes())
        .expect("lookup")
        .is_some()
}

/// One round of the writer: gather, commit, hand on.
fn round(w: &mut Run) -> Next {
    let p = w.gather();
    match w.commit(&p) {
        Ok(()) => w.committed(p),
        Err(e) => w.failed(e),
    }
}

#[test]
fn many_staged_mutations_become_one_batch() {
    let s = store();
    let inos: Vec<u64> = (0..50).map(|i| mkdir(&s.fs, &format!("d{i}"))).collect();
    let w = Run::new(s.fs.clone());
    let p = w.gather();
    assert_eq!(
        p.seq,
        s.fs.cache.seq(),
        "the batch covers everything staged"
    );
    for ino in &inos {
        assert!(
            p.batch.inodes.iter().any(|(i, v)| i == ino && v.is_some()),
            "inode {ino} is in the one batch"
        );
    }
    let names = p.batch.dentries.iter().filter(|(_, d)| d.is_some()).count();
    assert_eq!(names, 50, "every new name is in the one batch");
    // One `sidecars` row covers every inode the batch changed.
    let (_, covered) = p.sidecars.as_ref().expect("a sidecars row");
    for ino in &inos {
        assert!(covered.contains(ino));
    }
    let rows = p
        .batch
        .journal
        .iter()
        .filter(|r| r.op == journal::Op::Sidecars)
        .count();
    assert_eq!(rows, 1);
    assert!(
        !committed(&s.fs, "d0"),
        "nothing is committed before the commit"
    );
    w.commit(&p).expect("commit");
    for i in 0..50 {
        assert!(committed(&s.fs, &format!("d{i}")));
    }
}

#[test]
fn a_batch_commits_its_journal_rows_with_its_metadata() {
    let s = store();
    let row = journal::Record::new(
        journal::Op::Create,
        journal::Status::Pending,
        None,
        serde_json::json!({ "test": "together" }),
    );
    let id = row.id;
    s.fs.mutate(|tx| {
        tx.log(row);
        Ok(())
    })
    .expect("stage a row");
    mkdir(&s.fs, "with-row");
    let mut w = Run::new(s.fs.clone());
    assert!(round(&mut w) == Next::Continue);
    assert!(committed(&s.fs, "with-row"));
    let pending = s.fs.meta.pending_journal().expect("journal");
    assert!(
        pending.iter().any(|r| r.id == id),
        "the row committed with the entry"
    );

    // A batch that cannot commit (its row's id is taken) leaves neither its
    // row nor its metadata behind.
    let again = journal::Record {
        id,
        ..journal::Record::new(
            journal::Op::Create,
            journal::Status::Pending,
            None,
            serde_json::json!({ "test": "duplicate" }),
        )
    };
    s.fs.mutate(|tx| {
        tx.log(again);
        Ok(())
    })
    .expect("stage a duplicate row");
    mkdir(&s.fs, "lost");
    let p = w.gather();
    assert!(w.commit(&p).is_err(), "a duplicate row id fails the commit");
    assert!(
        !committed(&s.fs, "lost"),
        "nothing of a failed batch commits"
    );
    let pending = s.fs.meta.pending_journal().expect("journal");
    assert!(!pending
        .iter()
        .any(|r| r.data.get("test").and_then(|v| v.as_str()) == Some("duplicate")));
}

#[test]
fn wait_for_returns_only_once_its_sequence_is_committed() {
    let s = store();
    mkdir(&s.fs, "a");
    let seq = s.fs.cache.seq();
    let returned = Arc::new(AtomicBool::new(false));
    let waiter = {
        let (fs, returned) = (s.fs.clone(), returned.clone());
        std::thread::spawn(move || {
            let r = fs.writer.wait_for(seq);
            returned.store(true, Ordering::SeqCst);
            r
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !returned.load(Ordering::SeqCst),
        "wait_for returned before anything was committed"
    );
    // A waiter makes the writer commit at once (no gathering).
    assert_eq!(s.fs.writer.state.lock().waiters, 1);
    let mut w = Run::new(s.fs.clone());
    round(&mut w);
    waiter.join().expect("waiter").expect("committed");
    assert!(committed(&s.fs, "a"));
    // Already committed: returns at once.
    s.fs.writer.wait_for(seq).expect("committed before");
}

#[test]
fn a_failing_commit_is_an_error_to_waiters_and_not_acknowledged() {
    let s = store();
    mkdir(&s.fs, "a");
    let seq = s.fs.cache.seq();
    let mut w = Run::new(s.fs.clone());
    round(&mut w);
    let acked = s.fs.writer.state.lock().flushed_seq;
    assert!(acked >= seq);

    // The database goes away: the next batch cannot commit.
    mkdir(&s.fs, "b");
    let seq = s.fs.cache.seq();
    s.fs.meta.close();
    let waiter = {
        let fs = s.fs.clone();
        std::thread::spawn(move || fs.writer.wait_for(seq))
    };
    while s.fs.writer.state.lock().waiters == 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(round(&mut w) == Next::Continue, "the writer retries");
    let err = waiter
        .join()
        .expect("waiter")
        .expect_err("the waiter learns of the failure");
    assert!(err.to_string().contains("cannot commit metadata"), "{err}");
    let st = s.fs.writer.state.lock();
    assert_eq!(
        st.flushed_seq, acked,
        "the failed batch is not acknowledged"
    );
    assert!(st.last_error.is_some());
    assert!(st.kicked, "a retry is due");
    drop(st);
    let (running, last) = s.fs.writer.health();
    assert!(running && last.is_some());

    // Shutting down with nothing saveable: the writer stops and waiters
    // are told so at once.
    s.fs.writer.state.lock().shutdown = true;
    assert!(round(&mut w) == Next::Stop);
    let err = s.fs.writer.wait_for(seq).expect_err("stopped");
    assert!(err.to_string().contains("stopped"), "{err}");
}

/// Sidecars still pending at a clean close are written within the close's
/// budget, and the budget holds inside one row (a burst's row names
/// thousands of inodes, at two fsyncs each): out of time, the row stays
/// pending for the next mount, its sidecars not all written.
#[test]
fn sidecars_at_close_keep_to_their_time_even_within_one_row() {
    use crate::core::sidecar_sync::finish_within;
    let s = store();
    let inos: Vec<u64> = (0..20).map(|i| mkdir(&s.fs, &format!("d{i}"))).collect();
    let mut w = Run::new(s.fs.clone());
    assert!(round(&mut w) == Next::Continue);
    let sidecar_rows = |fs: &Fs| {
        let rows = fs.meta.pending_journal().expect("journal");
        rows.iter()
            .filter(|r| r.op == journal::Op::Sidecars)
            .count()
    };
    assert_eq!(sidecar_rows(&s.fs), 1, "one row names the 20 inodes");
    let written = |fs: &Fs| {
        inos.iter()
            .filter(|i| fs.objects.read_sidecar(**i).expect("read").is_some())
            .count()
    };
    assert_eq!(written(&s.fs), 0, "no sidecar thread ran");
    // Each sidecar takes 50 ms: a budget of 200 ms runs out inside the
    // row (all 20 would take a second), which stays pending with a few
    // of its sidecars written.
    let scenario = fail::FailScenario::setup();
    fail::cfg("render::sidecar", "sleep(50)").expect("failpoint");
    let t = std::time::Instant::now();
    assert_eq!(finish_within(&s.fs, Duration::from_millis(200)), 1);
    let took = t.elapsed();
    fail::remove("render::sidecar");
    scenario.teardown();
    assert!(took < Duration::from_millis(700), "took {took:?}");
    assert_eq!(sidecar_rows(&s.fs), 1);
    let part = written(&s.fs);
    assert!(part > 0 && part < inos.len(), "{part} of 20 written");
    // Time enough: every sidecar is written and the row settled.
    assert_eq!(finish_within(&s.fs, Duration::from_secs(60)), 0);
    assert_eq!(sidecar_rows(&s.fs), 0);
    assert_eq!(written(&s.fs), inos.len());
}
