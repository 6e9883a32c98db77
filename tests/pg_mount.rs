//! A real mount on PostgreSQL: `artfs mount BACKING MNT --db postgres://...`
//! serves files, keeps them across a remount, and the offline commands
//! (fsck, search) read the same tables. (The whole FUSE suite on both
//! engines comes with the test helper that chooses the engine.)

mod common;

use std::io::Write;
use std::process::Command;

use common::pg::PgServer;
use common::{bin, Mount};

/// Run an offline command on the store: (exit code, output).
fn artfs(args: &[&str]) -> (i32, String) {
    let out = Command::new(bin())
        .args(args)
        .env("ARTFS_LOG", "warn")
        .output()
        .expect("run artfs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn a_store_mounts_and_remounts_on_postgresql() {
    let db = PgServer::shared().database("mount");
    let args = ["--db", db.url.as_str(), "--table-prefix", "mnt1"];
    let mut m = Mount::with_args(&args);
    std::fs::create_dir(m.path("docs")).unwrap();
    let mut f = std::fs::File::create(m.path("docs/README.gz")).unwrap();
    f.write_all(b"hello from postgres").unwrap();
    f.sync_all().unwrap();
    drop(f);
    std::fs::write(m.path("docs/old.txt"), b"x").unwrap();
    std::fs::rename(m.path("docs/old.txt"), m.path("new.txt")).unwrap();
    std::fs::hard_link(m.path("new.txt"), m.path("docs/link.txt")).unwrap();
    std::fs::remove_file(m.path("docs/link.txt")).unwrap();
    m.remount();
    assert_eq!(
        std::fs::read(m.path("docs/README.gz")).unwrap(),
        b"hello from postgres"
    );
    let mut names: Vec<String> = std::fs::read_dir(m.path("/"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.contains(&"docs".to_string()), "{names:?}");
    assert!(names.contains(&"new.txt".to_string()), "{names:?}");
    assert_eq!(std::fs::read(m.path("new.txt")).unwrap(), b"x");
    m.unmount();

    let backing = m.backing.to_str().unwrap();
    let (code, out) = artfs(&[&["fsck", backing][..], &args[..]].concat());
    assert_eq!(code, 0, "fsck:\n{out}");
    let (code, out) = artfs(&[&["search", backing][..], &args[..], &["README.gz"][..]].concat());
    assert_eq!(code, 0, "search:\n{out}");
    assert!(out.contains("docs/README.gz"), "search:\n{out}");
    // The store is its prefix's tables: the default prefix in the same
    // database holds none.
    let (code, out) = artfs(&[&["fsck", backing][..], &["--db", db.url.as_str()][..]].concat());
    assert_ne!(code, 0, "another prefix holds no store:\n{out}");
    // Without the flags, the error says which ones BACKING was served with.
    let (code, out) = artfs(&["fsck", backing]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("last served with `--db postgres") && out.contains("--table-prefix mnt1`"),
        "{out}"
    );
    // A mount without them is refused the same way, creating nothing.
    let mnt = tempfile::tempdir().unwrap();
    let (code, out) = artfs(&["mount", backing, mnt.path().to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("last served with `--db postgres"), "{out}");
    assert!(!m.backing.join(".artfs/meta.db").exists());
}

/// The engine helper really moves a test's tables: on SQLite they are in
/// BACKING, on PostgreSQL nothing of them is (and commands need the
/// store's flags).
#[test]
fn every_engine_puts_the_tables_where_it_says() {
    use common::engine::{current, every_metadata_engine, Engine};
    let seen = std::sync::Mutex::new(Vec::new());
    every_metadata_engine(|| {
        let m = Mount::new();
        std::fs::write(m.path("f"), b"x").unwrap();
        let in_backing = m.backing.join(".artfs/meta.db").exists();
        assert_eq!(in_backing, current() == Engine::Sqlite, "{:?}", current());
        assert_eq!(m.store_args().is_empty(), current() == Engine::Sqlite);
        seen.lock().unwrap().push(current());
    });
    assert_eq!(
        *seen.lock().unwrap(),
        vec![Engine::Sqlite, Engine::Postgres]
    );
}

/// A database that asks for a password: it comes from ARTFS_DB_PASSWORD or
/// the config file's `db_password_file`, never the command line; a wrong
/// or missing one is refused clearly, and the password is never printed.
#[test]
fn the_password_comes_from_the_environment_or_a_file() {
    let server = PgServer::start();
    let Some(data) = server.data_dir() else {
        println!("skipped: an external PostgreSQL's authentication is not ours to change");
        return;
    };
    let db = server.database("password");
    // scram-sha-256 for one role, ahead of the trust lines initdb wrote.
    let secret = "s3cret-Pa55";
    server.execute(&format!(
        "CREATE ROLE pwuser LOGIN PASSWORD '{secret}'; \
         GRANT ALL ON DATABASE \"{}\" TO pwuser; ALTER DATABASE \"{}\" OWNER TO pwuser",
        db.name, db.name
    ));
    let hba = data.join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, format!("local all pwuser scram-sha-256\n{old}")).unwrap();
    server.execute("SELECT pg_reload_conf()");
    let url = db.url.replace("user=postgres", "user=pwuser");
    assert_ne!(url, db.url, "the test URL names its user: {url}");

    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("b");
    std::fs::create_dir(&backing).unwrap();
    let rebuild = |envs: &[(&str, &str)], config: Option<&std::path::Path>| {
        let mut c = Command::new(bin());
        c.arg("rebuild")
            .arg(&backing)
            .args(["--db", &url, "--table-prefix", "pw"])
            .env_remove("ARTFS_DB_PASSWORD")
            .env("ARTFS_LOG", "warn")
            .envs(envs.iter().copied());
        if let Some(f) = config {
            c.arg("--config").arg(f);
        }
        let out = c.output().unwrap();
        (out.status.code().unwrap_or(-1), common::output_text(&out))
    };
    std::fs::create_dir(backing.join(".artfs")).unwrap();
    std::fs::write(backing.join(".artfs/store-id"), "pw-test-store").unwrap();
    // No password: refused, saying it is authentication.
    let (code, out) = rebuild(&[], None);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("password"), "{out}");
    // A wrong one: refused, and not echoed.
    let (code, out) = rebuild(&[("ARTFS_DB_PASSWORD", "wrong-guess")], None);
    assert_eq!(code, 2, "{out}");
    assert!(!out.contains("wrong-guess"), "{out}");
    // From the environment.
    let (code, out) = rebuild(&[("ARTFS_DB_PASSWORD", secret)], None);
    assert_eq!(code, 0, "{out}");
    // From a file the config names (relative to the config file).
    std::fs::write(dir.path().join("db.password"), format!("{secret}\n")).unwrap();
    let cfg = dir.path().join("artfs.toml");
    std::fs::write(&cfg, "[store]\ndb_password_file = \"db.password\"\n").unwrap();
    let (code, out) = rebuild(&[], Some(&cfg));
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains(secret), "{out}");
    // A config naming a missing file says which.
    std::fs::write(&cfg, "[store]\ndb_password_file = \"nope\"\n").unwrap();
    let (code, out) = rebuild(&[], Some(&cfg));
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("db_password_file") && out.contains("nope"),
        "{out}"
    );
}
