//! A throwaway PostgreSQL for tests, or the one `ARTFS_TEST_PG_URL` names.
//!
//! Without `ARTFS_TEST_PG_URL`, [`PgServer::start`] runs `initdb` into a
//! fresh temp dir and starts `postgres` itself (not `pg_ctl`, so the pid
//! it holds is the server's): unix socket only, in a private socket dir
//! (so any port number is free; 5432 is used), fsync off. As root it runs
//! both as the `postgres` OS user (initdb refuses root). Dropping it stops
//! that pid (after checking /proc/PID/cmdline) and removes the dir. If the
//! test process is killed instead, the server gets SIGQUIT (parent-death
//! signal) and the next start sweeps its dir away an hour later.
//!
//! Tests never share state: each takes its own database
//! ([`PgServer::database`]), usually on the one server of its test binary
//! ([`PgServer::shared`], stopped at exit); a test that stops and starts
//! the server (outages) starts its own.
//!
//! `ARTFS_TEST_PG_BIN` names the directory of `initdb` and `postgres`;
//! otherwise the newest /usr/lib/postgresql/*/bin, then `PATH`.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The socket's port number (private socket dir: never taken).
const PORT: u16 = 5432;

/// How long the server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub struct PgServer {
    /// `postgres:///postgres?...` (ours) or ARTFS_TEST_PG_URL.
    admin_url: String,
    own: Option<Own>,
    /// initdb, then start until ready (zero for an external server).
    pub startup: Duration,
}

struct Own {
    /// The running server (None once stopped).
    child: Mutex<Option<Child>>,
    data: PathBuf,
    sock: PathBuf,
    log: PathBuf,
    bin: PathBuf,
    /// uid and gid to run as (root runs as `postgres`).
    ids: Option<(u32, u32)>,
    _dir: tempfile::TempDir,
}

/// One test's database on a server.
pub struct PgDatabase {
    pub name: String,
    /// A URL artfs and sqlx accept.
    pub url: String,
    /// Drop the database afterwards (an external server; ours goes away).
    admin_url: Option<String>,
}

impl PgServer {
    /// A server of its own (or the external one): for tests that stop and
    /// start it. Most tests take [`PgServer::shared`].
    pub fn start() -> PgServer {
        match std::env::var(super::services::PG_URL) {
            Ok(url) if !url.is_empty() => PgServer {
                admin_url: url,
                own: None,
                startup: Duration::ZERO,
            },
            _ => PgServer::throwaway(),
        }
    }

    /// The test binary's server, started on first use and stopped when the
    /// process exits.
    pub fn shared() -> &'static PgServer {
        static SHARED: OnceLock<PgServer> = OnceLock::new();
        SHARED.get_or_init(|| {
            let s = PgServer::start();
            extern "C" fn stop_shared() {
                if let Some(s) = SHARED.get() {
                    s.stop();
                    if let Some(own) = &s.own {
                        // Statics are never dropped: remove the dir here.
                        let _ = fs::remove_dir_all(own._dir.path());
                    }
                }
            }
            // SAFETY: registering a plain function; it runs at exit.
            unsafe { libc::atexit(stop_shared) };
            s
        })
    }

    /// Whether this is a server the tests started (and may stop).
    pub fn is_own(&self) -> bool {
        self.own.is_some()
    }

    /// The running server's pid (ours only).
    pub fn pid(&self) -> Option<u32> {
        let own = self.own.as_ref()?;
        let child = own.child.lock().unwrap();
        child.as_ref().map(Child::id)
    }

    /// The server's data directory (ours only).
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.own.as_ref().map(|o| o.data.as_path())
    }

    /// The maintenance database's URL.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// A fresh, empty database for one test (a unique name derived from
    /// `name`), and a URL to it.
    pub fn database(&self, name: &str) -> PgDatabase {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let clean: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let db = format!(
            "t{}_{}_{clean}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        // About 0.1 s (either STRATEGY: measured, no clear winner).
        self.execute(&format!("CREATE DATABASE \"{db}\""));
        PgDatabase {
            url: with_database(&self.admin_url, &db),
            name: db,
            admin_url: (!self.is_own()).then(|| self.admin_url.clone()),
        }
    }

    /// Run one statement on the maintenance database.
    pub fn execute(&self, sql: &str) {
        execute(&self.admin_url, sql).unwrap_or_else(|e| panic!("{sql}: {e}{}", self.log_tail()));
    }

    /// Stop the server (SIGTERM, then SIGQUIT after a second: the data is
    /// throwaway); no-op when stopped or external.
    pub fn stop(&self) {
        let Some(own) = &self.own else { return };
        let Some(mut child) = own.child.lock().unwrap().take() else {
            return;
        };
        let pid = child.id();
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        // Only ever signal the server we started, still running there.
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let ours = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !ours.contains("postgres") || !ours.contains(&*own.data.to_string_lossy()) {
            // (Also runs at exit, where a panic would abort.)
            eprintln!("pid {pid} is not our postgres any more: {ours:?}; not signalled");
            return;
        }
        for (sig, wait) in [
            (libc::SIGTERM, Duration::from_secs(1)),
            (libc::SIGQUIT, Duration::from_secs(5)),
            (libc::SIGKILL, Duration::from_secs(30)),
        ] {
            // SAFETY: a signal to a child we have not reaped yet.
            unsafe { libc::kill(pid as i32, sig) };
            let deadline = Instant::now() + wait;
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = child.wait();
    }

    /// Start a stopped server again on the same data (an outage's end).
    pub fn restart(&self) {
        let own = self
            .own
            .as_ref()
            .expect("an external server cannot be restarted");
        assert!(own.child.lock().unwrap().is_none(), "still running");
        let child = own.spawn_server();
        *own.child.lock().unwrap() = Some(child);
        own.wait_ready();
    }

    /// The last lines of the server log (for failure messages).
    pub fn log_tail(&self) -> String {
        self.own.as_ref().map(|o| o.log_tail()).unwrap_or_default()
    }

    fn throwaway() -> PgServer {
        let t0 = Instant::now();
        sweep_stale();
        let bin = pg_bin();
        let ids = (unsafe { libc::geteuid() } == 0).then(|| {
            let u = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .expect("running as root: no `postgres` user to run PostgreSQL as (scripts/install-deps.sh)");
            (u.uid.as_raw(), u.gid.as_raw())
        });
        let dir = tempfile::Builder::new()
            .prefix("artfs-pg-")
            .tempdir()
            .expect("tempdir");
        let (data, sock) = (dir.path().join("data"), dir.path().join("sock"));
        let log = dir.path().join("server.log");
        fs::create_dir(&sock).unwrap();
        fs::write(&log, b"").unwrap();
        if let Some((uid, gid)) = ids {
            for p in [dir.path(), &sock, &log] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
            }
        }
        let own = Own {
            child: Mutex::new(None),
            data,
            sock,
            log,
            bin,
            ids,
            _dir: dir,
        };
        let mut initdb = own.command("initdb");
        initdb
            .arg("-D")
            .arg(&own.data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8"])
            .args(["--locale=C.UTF-8", "--no-sync", "--no-instructions"]);
        let out = initdb
            .output()
            .unwrap_or_else(|e| panic!("cannot run initdb in {}: {e}", own.bin.display()));
        assert!(
            out.status.success(),
            "initdb failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let child = own.spawn_server();
        *own.child.lock().unwrap() = Some(child);
        own.wait_ready();
        let admin_url = format!(
            "postgres:///postgres?host={}&port={PORT}&user=postgres",
            own.sock.display()
        );
        PgServer {
            admin_url,
            own: Some(own),
            startup: t0.elapsed(),
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if let Some(admin) = &self.admin_url {
            let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
            if let Err(e) = execute(admin, &sql) {
                eprintln!("{sql}: {e}");
            }
        }
    }
}

impl Own {
    /// A command for one of PostgreSQL's programs, as the server's user.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        c.env_remove("PGDATA")
            .env("LC_ALL", "C.UTF-8")
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.ids {
            // (std drops root's supplementary groups with the uid.)
            c.uid(uid).gid(gid);
        }
        c
    }

    fn spawn_server(&self) -> Child {
        let log = fs::OpenOptions::new().append(true).open(&self.log).unwrap();
        let mut c = self.command("postgres");
        c.arg("-D")
            .arg(&self.data)
            .arg("-k")
            .arg(&self.sock)
            .arg("-p")
            .arg(PORT.to_string())
            .args(["-c", "listen_addresses="])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=300"])
            .args(["-c", "shared_buffers=64MB", "-c", "jit=off"])
            .args(["-c", "max_parallel_workers_per_gather=0"])
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: only async-signal-safe calls between fork and exec. If
        // the test process dies without stopping it (killed), the server
        // is told to quit (set after the uid change, which clears it).
        unsafe {
            c.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
                Ok(())
            });
        }
        spawn_from_keeper(c).unwrap_or_else(|e| panic!("cannot start postgres: {e}"))
    }

    /// Wait until the server accepts connections: postmaster.pid's status
    /// line says `ready` (what pg_ctl waits for).
    fn wait_ready(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let pidfile = self.data.join("postmaster.pid");
        loop {
            let ready = fs::read_to_string(&pidfile)
                .map(|s| s.lines().nth(7).is_some_and(|l| l.trim() == "ready"))
                .unwrap_or(false);
            if ready {
                return;
            }
            if let Some(c) = self.child.lock().unwrap().as_mut() {
                if let Some(status) = c.try_wait().unwrap() {
                    panic!(
                        "postgres exited ({status}) before it was ready:\n{}",
                        self.log_tail()
                    );
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "postgres not ready after {READY_TIMEOUT:?}:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "\n--- {} (last lines) ---\n{}",
            self.log.display(),
            lines[lines.len().saturating_sub(40)..].join("\n")
        )
    }
}

/// Spawn `c` from a thread that lives as long as the process: the server's
/// parent-death signal follows the thread that forked it, and a test's
/// thread ends before the binary's shared server should.
fn spawn_from_keeper(c: Command) -> std::io::Result<Child> {
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static KEEPER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("pg-keeper".into())
            .spawn(move || {
                for (mut c, reply) in rx {
                    let _ = reply.send(c.spawn());
                }
                // The senders live in a static: never reached.
            })
            .unwrap();
        Mutex::new(tx)
    });
    let (tx, rx) = mpsc::channel();
    keeper.lock().unwrap().send((c, tx)).unwrap();
    rx.recv().unwrap()
}

/// Remove the dirs of servers whose test process was killed (no stop, no
/// atexit): no live postmaster and no log line for an hour. (A server
/// stopped for an outage test logged its shutdown moments ago.)
fn sweep_stale() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let dir = e.path();
        if !e.file_name().to_string_lossy().starts_with("artfs-pg-") {
            continue;
        }
        let pid: Option<i32> = fs::read_to_string(dir.join("data/postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse().ok());
        // SAFETY: signal 0 only checks that the process exists.
        if pid.is_some_and(|p| unsafe { libc::kill(p, 0) } == 0) {
            continue;
        }
        let quiet = fs::metadata(dir.join("server.log"))
            .or_else(|_| fs::metadata(&dir))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(3600));
        if quiet {
            let _ = fs::remove_dir_all(&dir);
        }
    }
}

fn pg_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("ARTFS_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        // Whatever PATH finds.
        None => PathBuf::new(),
    }
}

/// `url` with its database replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{db}", &base[..authority_end]);
    if let Some(q) = query {
        // A `dbname=` parameter would override the path: drop it.
        let kept: Vec<&str> = q.split('&').filter(|p| !p.starts_with("dbname=")).collect();
        if !kept.is_empty() {
            out.push('?');
            out.push_str(&kept.join("&"));
        }
    }
    out
}

/// One statement on its own connection (on a small runtime of its own, so
/// any test, async or not, can call it).
/// Run `sql` on a connection of its own to `url`, on a thread and runtime
/// of its own (the caller may itself be inside a runtime): as statements,
/// or (`lines`) as a query whose rows' first column is text.
fn on_conn(url: &str, sql: &str, lines: bool) -> Result<Vec<String>, sqlx::Error> {
    use sqlx::{Connection, Row};
    let (url, sql) = (url.to_string(), sql.to_string());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut conn = sqlx::PgConnection::connect(&url).await?;
            let out = if lines {
                let rows = sqlx::query(&sql).fetch_all(&mut conn).await?;
                rows.iter().map(|r| r.try_get::<String, _>(0)).collect()
            } else {
                sqlx::raw_sql(&sql)
                    .execute(&mut conn)
                    .await
                    .map(|_| Vec::new())
            };
            conn.close().await?;
            out
        })
    })
    .join()
    .unwrap()
}

/// Rows of a query whose first column is text, one string per row.
pub fn query_lines(url: &str, sql: &str) -> Result<Vec<String>, sqlx::Error> {
    on_conn(url, sql, true)
}

/// Run statements on `url`.
pub fn execute(url: &str, sql: &str) -> Result<(), sqlx::Error> {
    on_conn(url, sql, false).map(drop)
}
