//! A throwaway redis-server for one test: its own port, no persistence
//! (`--save '' --appendonly no`), stopped by the pid it was started with
//! (checked against its command line) when dropped.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A Redis for a test that only uses it: the outside one
/// `ARTFS_TEST_REDIS_URL` names (the compose file's redis service), else a
/// throwaway server of its own. Stores keep their keys and channels apart
/// by store id, so tests can share one.
pub struct SomeRedis {
    pub url: String,
    /// The throwaway server, when there is no outside one.
    pub own: Option<RedisServer>,
}

impl SomeRedis {
    pub fn get() -> SomeRedis {
        match std::env::var(super::services::REDIS_URL) {
            Ok(url) if !url.is_empty() => SomeRedis { url, own: None },
            _ => {
                let own = RedisServer::start();
                SomeRedis {
                    url: own.url.clone(),
                    own: Some(own),
                }
            }
        }
    }
}

pub struct RedisServer {
    pub port: u16,
    pub url: String,
    pub dir: tempfile::TempDir,
    child: Mutex<Option<Child>>,
    /// Arguments of redis-server and redis-cli for TLS (empty: plain).
    server_tls: Vec<String>,
    cli_tls: Vec<String>,
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = free_port();
        let s = RedisServer {
            port,
            url: format!("redis://127.0.0.1:{port}/0"),
            dir: tempfile::Builder::new()
                .prefix("artfs-redis-")
                .tempdir()
                .unwrap(),
            child: Mutex::new(None),
            server_tls: Vec::new(),
            cli_tls: Vec::new(),
        };
        s.restart();
        s
    }

    /// A server that speaks TLS only (`rediss://localhost:PORT/0`), with a
    /// certificate for localhost signed by a CA of its own; returns the
    /// CA's certificate file too.
    pub fn start_tls() -> (RedisServer, std::path::PathBuf) {
        let port = free_port();
        let dir = tempfile::Builder::new()
            .prefix("artfs-redis-")
            .tempdir()
            .unwrap();
        let (ca, cert, key) = super::keys::tls_files(dir.path());
        let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
        let s = RedisServer {
            port,
            url: format!("rediss://localhost:{port}/0"),
            server_tls: vec![
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                path(&cert),
                "--tls-key-file".into(),
                path(&key),
                "--tls-ca-cert-file".into(),
                path(&ca),
                "--tls-auth-clients".into(),
                "no".into(),
            ],
            cli_tls: vec!["--tls".into(), "--cacert".into(), path(&ca)],
            dir,
            child: Mutex::new(None),
        };
        s.restart();
        (s, ca)
    }

    /// Start the (stopped) server again on the same port.
    pub fn restart(&self) {
        let mut slot = self.child.lock().unwrap();
        assert!(slot.is_none(), "still running");
        let log = std::fs::File::create(self.dir.path().join("log")).unwrap();
        let plain_port = if self.server_tls.is_empty() {
            self.port.to_string()
        } else {
            "0".to_string()
        };
        let child = Command::new("redis-server")
            .args(["--port", &plain_port])
            .args(&self.server_tls)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .spawn()
            .expect("redis-server (scripts/install-deps.sh installs it)");
        *slot = Some(child);
        drop(slot);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]).trim() != "PONG" {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop the server (SIGTERM to the pid we started, after checking it
    /// is still ours).
    pub fn stop(&self) {
        let Some(mut child) = self.child.lock().unwrap().take() else {
            return;
        };
        let pid = child.id();
        if child.try_wait().ok().flatten().is_none() {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmd.contains("redis-server") && cmd.contains(&self.port.to_string()) {
                // SAFETY: a signal to a child we have not reaped yet.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            } else {
                eprintln!("pid {pid} is not our redis-server: {cmd:?}; not signalled");
            }
        }
        let _ = child.wait();
    }

    /// `redis-cli -p PORT ARGS`: its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(&self.cli_tls)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
