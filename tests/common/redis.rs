//! A throwaway redis-server for one test: its own port, no persistence
//! (`--save '' --appendonly no`), stopped by the pid it was started with
//! (checked against its command line) when dropped.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    pub url: String,
    dir: tempfile::TempDir,
    child: Mutex<Option<Child>>,
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
        };
        s.restart();
        s
    }

    /// Start the (stopped) server again on the same port.
    pub fn restart(&self) {
        let mut slot = self.child.lock().unwrap();
        assert!(slot.is_none(), "still running");
        let log = std::fs::File::create(self.dir.path().join("log")).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
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
