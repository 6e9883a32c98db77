//! PostgreSQL goes away under load and comes back: the daemon survives,
//! what was fsynced is intact, the store is consistent, and health says
//! so meanwhile. PostgreSQL only (a server of the test's own, to stop);
//! SQLite's database cannot go away without BACKING going too.

mod common;

use std::fs;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::api::{free_addr, key};
use common::pg::PgServer;
use common::Mount;

#[test]
fn a_database_outage_loses_nothing_fsynced_and_the_daemon_rides_it_out() {
    let server = PgServer::start();
    if !server.is_own() {
        println!("skipped: an external PostgreSQL cannot be stopped by the test");
        return;
    }
    let db = server.database("outage");
    let addr = free_addr();
    let public = key().public.to_str().unwrap().to_string();
    let mut m = Mount::with_args(&[
        "--db",
        &db.url,
        "--table-prefix",
        "t",
        "--api",
        &addr,
        "--jwt-key",
        &public,
    ]);
    fs::create_dir(m.path("d")).unwrap();
    // The readiness probe's status (0: no answer within `wait`).
    let ready = |wait: Duration| -> u16 {
        reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(wait)
            .build()
            .unwrap()
            .get(format!("http://{addr}/health/ready"))
            .send()
            .map_or(0, |r| r.status().as_u16())
    };
    assert_eq!(ready(Duration::from_secs(5)), 200);

    // A writer loop: each file written and fsynced; remember which fsyncs
    // said yes (those must survive whatever happens).
    let stop = Arc::new(AtomicBool::new(false));
    let synced = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(Mutex::new(0u32));
    let writer = {
        let (dir, stop, synced, failed) =
            (m.path("d"), stop.clone(), synced.clone(), failed.clone());
        std::thread::spawn(move || {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let p = dir.join(format!("f{i}"));
                let r = fs::File::create(&p).and_then(|mut f| {
                    f.write_all(format!("content {i}").as_bytes())?;
                    f.sync_all()
                });
                match r {
                    Ok(()) => synced.lock().unwrap().push(i),
                    Err(_) => *failed.lock().unwrap() += 1,
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let before = synced.lock().unwrap().len();
    assert!(before > 0, "nothing was written before the outage");

    server.stop();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    // Health tells the outage within a bound, not after the pool's wait.
    let probe = Instant::now();
    assert_eq!(ready(Duration::from_secs(10)), 503);
    assert!(
        probe.elapsed() < Duration::from_secs(5),
        "{:?}",
        probe.elapsed()
    );
    std::thread::sleep(Duration::from_secs(5).saturating_sub(t0.elapsed()));
    server.restart();

    // Service resumes: new files are fsynced again.
    let resumed = Instant::now();
    let n = synced.lock().unwrap().len();
    while synced.lock().unwrap().len() <= n + 3 {
        assert!(
            resumed.elapsed() < Duration::from_secs(60),
            "no fsync succeeded after the database came back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready(Duration::from_secs(5)) != 200 {
        assert!(Instant::now() < deadline, "never ready again");
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();

    // Everything fsynced is there, across a remount, and fsck is clean.
    m.remount();
    let synced = synced.lock().unwrap().clone();
    for i in &synced {
        let got = fs::read(m.path(&format!("d/f{i}")))
            .unwrap_or_else(|e| panic!("fsynced f{i} lost: {e}"));
        assert_eq!(got, format!("content {i}").into_bytes(), "f{i}");
    }
    m.unmount();
    let out = std::process::Command::new(common::bin())
        .arg("fsck")
        .arg(&m.backing)
        .args(["--db", &db.url, "--table-prefix", "t"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::output_text(&out));
    println!(
        "{} files fsynced, {} refused during the outage",
        synced.len(),
        failed.lock().unwrap()
    );
}
