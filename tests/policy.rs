//! Storage policy (issue 6) through the mount: every mode × every mutating
//! operation gives the errno the mode promises and changes nothing when
//! refused; modes change live (open write handles see the new rule on
//! their next write); retention blocks deletion, replacement, truncation
//! and writes, and can only be extended.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use common::{code, removex, setx, Mount};

/// Change the mode with the CLI and wait until the mount follows.
fn set_mode(m: &Mount, mode: &str, confirm: bool) {
    let mut c = m.command("mode");
    c.arg(mode);
    if confirm {
        c.arg("--confirm");
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "artfs mode {mode}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The daemon polls the policy every 500 ms.
    std::thread::sleep(Duration::from_millis(1200));
}

/// Everything observable about the tree: name -> (mode, size, content).
fn snapshot(root: &Path) -> BTreeMap<String, (u32, u64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(root).unwrap() {
        let e = e.unwrap();
        let md = fs::symlink_metadata(e.path()).unwrap();
        let content = if md.is_file() {
            // Reading is refused in ar mode: size and mode still count.
            fs::read(e.path()).unwrap_or_default()
        } else {
            Vec::new()
        };
        out.insert(
            e.file_name().to_string_lossy().into_owned(),
            (md.mode(), md.size(), content),
        );
    }
    out
}

fn fixtures(m: &Mount) {
    for f in [
        "f_write", "f_shrink", "f_grow", "f_unlink", "f_rename", "f_src", "f_dst", "f_chmod",
        "f_xattr", "f_read", "f_punch", "f_zero",
    ] {
        fs::write(m.path(f), format!("content of {f}")).unwrap();
    }
    fs::create_dir(m.path("d_empty")).unwrap();
}

type Op = (&'static str, fn(&Path) -> std::io::Result<()>);

/// fallocate on an open file (`mode` as for fallocate(2)).
fn fallocate_at(p: &Path, mode: libc::c_int) -> std::io::Result<()> {
    let f = OpenOptions::new().write(true).open(p)?;
    // SAFETY: plain syscall on an owned descriptor.
    let rc = unsafe { libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&f), mode, 2, 4) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

const OPS: [Op; 16] = [
    ("create", |r| fs::write(r.join("n_file"), b"x")),
    ("mkdir", |r| fs::create_dir(r.join("n_dir"))),
    ("symlink", |r| {
        std::os::unix::fs::symlink("f_read", r.join("n_link"))
    }),
    ("link", |r| {
        fs::hard_link(r.join("f_read"), r.join("n_hard"))
    }),
    ("write", |r| {
        OpenOptions::new()
            .append(true)
            .open(r.join("f_write"))?
            .write_all(b" more")
    }),
    ("truncate-shrink", |r| {
        nix::unistd::truncate(&r.join("f_shrink"), 1).map_err(std::io::Error::from)
    }),
    ("truncate-grow", |r| {
        nix::unistd::truncate(&r.join("f_grow"), 100).map_err(std::io::Error::from)
    }),
    ("unlink", |r| fs::remove_file(r.join("f_unlink"))),
    ("rmdir", |r| fs::remove_dir(r.join("d_empty"))),
    ("rename", |r| {
        fs::rename(r.join("f_rename"), r.join("f_renamed"))
    }),
    ("rename-over", |r| {
        fs::rename(r.join("f_src"), r.join("f_dst"))
    }),
    ("chmod", |r| {
        fs::set_permissions(r.join("f_chmod"), fs::Permissions::from_mode(0o600))
    }),
    ("setxattr", |r| setx(&r.join("f_xattr"), "user.k", b"v")),
    ("read", |r| fs::read(r.join("f_read")).map(|_| ())),
    ("punch-hole", |r| {
        fallocate_at(
            &r.join("f_punch"),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        )
    }),
    ("zero-range", |r| {
        fallocate_at(&r.join("f_zero"), libc::FALLOC_FL_ZERO_RANGE)
    }),
];

/// The errno each mode gives each operation (0: allowed).
fn expected(mode: &str, op: &str) -> i32 {
    match (mode, op) {
        ("edit", _) => 0,
        // Punching or zeroing a range discards data, as shrinking does.
        (
            "rw",
            "truncate-shrink" | "unlink" | "rmdir" | "rename-over" | "punch-hole" | "zero-range",
        ) => libc::EPERM,
        ("rw", _) => 0,
        ("ro", "read") => 0,
        ("ar", "read") => libc::EACCES,
        (_, _) => libc::EROFS,
    }
}

#[test]
fn every_mode_times_every_operation() {
    common::engine::every_engine(|| {
        for mode in ["edit", "rw", "ro", "ar"] {
            let start = if mode == "edit" { "edit" } else { "rw" };
            let m = Mount::with_args(&["--mode", start]);
            fixtures(&m);
            match mode {
                "ro" => set_mode(&m, "ro", false),
                "ar" => {
                    set_mode(&m, "ro", false);
                    set_mode(&m, "ar", true);
                }
                _ => {}
            }
            for (name, op) in OPS {
                let before = snapshot(&m.mnt);
                let got = code(op(&m.mnt));
                let want = expected(mode, name);
                assert_eq!(
                    got, want,
                    "{mode} mode, {name}: errno {got}, expected {want}"
                );
                if want != 0 {
                    assert_eq!(
                        snapshot(&m.mnt),
                        before,
                        "{mode} mode, {name} refused but changed"
                    );
                }
            }
        }
    });
}

#[test]
fn a_change_to_ro_refuses_or_waits_for_open_writers_and_follows_the_state_machine() {
    common::engine::every_engine(|| {
        let m = Mount::with_args(&["--mode", "rw"]);
        let mut f = fs::File::create(m.path("log")).unwrap();
        f.write_all(b"line 1\n").unwrap();
        // Refused while a file is open for writing, naming it and who
        // holds it; the store stays rw.
        let out = m.command("mode").arg("ro").output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("/log (pid ") && err.contains("--force"),
            "{err}"
        );
        f.write_all(b"line 2\n").unwrap();
        // --force gives up after --wait if the writer stays.
        let out = m
            .command("mode")
            .args(["ro", "--force", "--wait", "1"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("given up"));
        fs::write(m.path("still-rw"), b"ok").unwrap();
        // --force: no new writer from now on, the open one finishes, and
        // the change is done once it closes.
        let mut cmd = m.command("mode");
        cmd.args(["ro", "--force", "--wait", "60"]);
        let waiting = std::thread::spawn(move || cmd.output().unwrap());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while code(fs::write(m.path("new"), b"n")) != libc::EROFS {
            assert!(
                std::time::Instant::now() < deadline,
                "new writers still let in"
            );
            let _ = fs::remove_file(m.path("new"));
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!waiting.is_finished(), "done while a writer is open");
        f.write_all(b"line 3\n").unwrap();
        f.sync_all().unwrap();
        drop(f);
        let out = waiting.join().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("rw -> ro"));
        assert_eq!(code(fs::write(m.path("x"), b"x")), libc::EROFS);
        let opened = fs::OpenOptions::new().append(true).open(m.path("log"));
        assert_eq!(code(opened), libc::EROFS);
        assert_eq!(
            fs::read(m.path("log")).unwrap(),
            b"line 1\nline 2\nline 3\n"
        );
        // Refused moves name the allowed ones; ro -> rw needs confirmation.
        let out = m.command("mode").arg("rw").output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("--confirm"));
        let out = m.command("mode").arg("edit").output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("allowed: ar, rw"));
        set_mode(&m, "rw", true);
        fs::write(m.path("again"), b"writable again").unwrap();
        drop(m);
    });
}

/// A shared mapping whose descriptor is closed still writes the file
/// (through passthrough it maps the object itself): a change to ro counts
/// it as a writer, refused or waiting for it to go like any other.
#[test]
fn a_change_to_ro_waits_for_a_shared_mapping_whose_descriptor_is_closed() {
    common::engine::every_engine(|| {
        let m = Mount::with_args(&["--mode", "rw"]);
        let p = m.path("mapped");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        f.set_len(4096).unwrap();
        let mut map = common::SharedMap::of(&f, 4096);
        drop(f);
        map.write(0, b"before");
        let out = m.command("mode").arg("ro").output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("/mapped (a shared mapping"), "{err}");
        let mut cmd = m.command("mode");
        cmd.args(["ro", "--force", "--wait", "60"]);
        let waiting = std::thread::spawn(move || cmd.output().unwrap());
        std::thread::sleep(Duration::from_millis(1500));
        assert!(!waiting.is_finished(), "done while a mapping writes");
        map.write(0, b"after!");
        drop(map);
        let out = waiting.join().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("rw -> ro"));
        assert_eq!(&fs::read(&p).unwrap()[..6], b"after!");
        let out = m.command("scrub").output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(code(OpenOptions::new().write(true).open(&p)), libc::EROFS);
        drop(m);
    });
}

#[test]
fn edit_mode_has_no_transitions() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        let out = m.command("mode").arg("ro").output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("no transitions"));
        fs::write(m.path("still"), b"edit").unwrap();
    });
}

#[test]
fn mode_is_kept_across_remounts_and_mount_flag_only_seeds_new_stores() {
    common::engine::every_engine(|| {
        let mut m = Mount::with_args(&["--mode", "rw"]);
        fs::write(m.path("a"), b"a").unwrap();
        m.unmount();
        // Remounting with another --mode keeps the store's own.
        m.try_mount(&[("ARTFS_MODE", "edit")]).unwrap();
        assert_eq!(code(fs::remove_file(m.path("a"))), libc::EPERM);
    });
}

#[test]
fn retention_blocks_changes_until_it_passes_and_only_extends() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        let r = m.path("kept");
        fs::write(&r, b"evidence").unwrap();
        fs::write(m.path("other"), b"other").unwrap();
        setx(&r, "user.artstore.retention_until", b"2100-01-01T00:00:00Z").unwrap();
        assert_eq!(code(fs::remove_file(&r)), libc::EPERM);
        assert_eq!(code(fs::rename(m.path("other"), &r)), libc::EPERM);
        assert_eq!(
            code(nix::unistd::truncate(&r, 0).map_err(std::io::Error::from)),
            libc::EPERM
        );
        assert_eq!(code(OpenOptions::new().append(true).open(&r)), libc::EPERM);
        assert_eq!(
            code(setx(
                &r,
                "user.artstore.retention_until",
                b"2099-01-01T00:00:00Z"
            )),
            libc::EPERM
        );
        assert_eq!(
            code(removex(&r, "user.artstore.retention_until")),
            libc::EPERM
        );
        // Extending is fine, and so are other metadata and renaming the file itself.
        setx(&r, "user.artstore.retention_until", b"2101-01-01T00:00:00Z").unwrap();
        setx(&r, "user.artstore.description", b"legal hold").unwrap();
        fs::rename(&r, m.path("kept-renamed")).unwrap();
        assert_eq!(fs::read(m.path("kept-renamed")).unwrap(), b"evidence");
        // A date in the past holds nothing.
        let p = m.path("expired");
        fs::write(&p, b"old").unwrap();
        setx(&p, "user.artstore.retention_until", b"2001-01-01T00:00:00Z").unwrap();
        fs::write(&p, b"rewritten").unwrap();
        fs::remove_file(&p).unwrap();
    });
}

fn df(p: &Path) -> (u64, u64) {
    let s = nix::sys::statvfs::statvfs(p).unwrap();
    (
        s.blocks() as u64 * s.fragment_size() as u64,
        s.blocks_available() as u64 * s.fragment_size() as u64,
    )
}

#[test]
fn capacity_is_exact_at_the_boundary_and_df_tells_the_truth() {
    common::engine::every_engine(|| {
        const CAP: u64 = 1 << 20;
        // Without the trash, so that unlinking frees space at once.
        let mut m = Mount::with_args(&["--capacity", "1M", "--trash-days", "0"]);
        assert_eq!(df(&m.mnt), (CAP, CAP));
        // Exact fit.
        let mut f = fs::File::create(m.path("a")).unwrap();
        f.write_all(&vec![1u8; 600 << 10]).unwrap();
        drop(f);
        let mut g = fs::File::create(m.path("b")).unwrap();
        g.write_all(&vec![2u8; (CAP - (600 << 10)) as usize])
            .unwrap();
        assert_eq!(df(&m.mnt), (CAP, 0));
        // One byte over: ENOSPC, and nothing of it lands.
        assert_eq!(
            g.write(b"x").unwrap_err().raw_os_error(),
            Some(libc::ENOSPC)
        );
        drop(g);
        assert_eq!(fs::metadata(m.path("b")).unwrap().len(), CAP - (600 << 10));
        assert_eq!(
            code(
                nix::unistd::truncate(&m.path("a"), (600 << 10) + 1).map_err(std::io::Error::from)
            ),
            libc::ENOSPC
        );
        // Freeing space gives it back.
        fs::remove_file(m.path("a")).unwrap();
        // The kernel sends the release of the closed file asynchronously: the
        // space comes back when it arrives (as on ext4, at the last close).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while df(&m.mnt).1 != 600 << 10 {
            assert!(std::time::Instant::now() < deadline, "space not given back");
            std::thread::sleep(Duration::from_millis(20));
        }
        fs::write(m.path("c"), vec![3u8; 600 << 10]).unwrap();
        // Kept across remounts; fsck agrees with the accounting.
        m.unmount();
        m.assert_consistent();
        m.mount();
        assert_eq!(df(&m.mnt), (CAP, 0));
        assert_eq!(code(fs::write(m.path("d"), b"1")), libc::ENOSPC);
        assert!(!m.path("d").exists() || fs::metadata(m.path("d")).unwrap().len() == 0);
    });
}

#[test]
fn concurrent_writers_never_exceed_the_capacity() {
    common::engine::every_engine(|| {
        const CAP: u64 = 1 << 20;
        let m = Mount::with_args(&["--capacity", "1M"]);
        let total = common::fill_concurrently(&m.mnt, 6, 64);
        assert_eq!(
            total, CAP,
            "6 writers of 256 KiB into 1 MiB fill it exactly"
        );
        let on_disk: u64 = (0..6)
            .map(|t| fs::metadata(m.path(&format!("w{t}"))).unwrap().len())
            .sum();
        assert_eq!(on_disk, CAP);
    });
}

/// Drop the kernel's cached pages of `f`'s file (the next read of them
/// comes from the daemon, or by passthrough from the object).
fn drop_cached_pages(f: &fs::File) {
    // SAFETY: plain syscall on an open descriptor.
    let rc = unsafe {
        libc::posix_fadvise(
            std::os::fd::AsRawFd::as_raw_fd(f),
            0,
            0,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    assert_eq!(rc, 0, "posix_fadvise");
}

/// READs the daemon served.
fn fuse_reads(api: &common::api::Api) -> u64 {
    api.fuse_ops("read")
}

/// WRITEs the daemon served.
fn fuse_writes(api: &common::api::Api) -> u64 {
    api.fuse_ops("write")
}

/// Handles the daemon serves cached (an append-only file's, here) keep the
/// kernel's page cache between opens while nothing changed the object, and
/// drop it when something did.
#[test]
fn daemon_served_warm_reads_come_from_the_page_cache_and_follow_changes() {
    common::engine::every_engine(|| {
        let api = common::api::Api::start(&[]);
        let p = api.m.path("f");
        let data = vec![7u8; 1 << 20];
        fs::write(&p, &data).unwrap();
        assert!(std::process::Command::new("chattr")
            .arg("+a")
            .arg(&p)
            .status()
            .unwrap()
            .success());
        // Opens once chattr's own handle is released; while it stays
        // open every open of the file is served cached.
        let log = OpenOptions::new().append(true).open(&p).unwrap();
        drop_cached_pages(&log);
        let before = fuse_reads(&api);
        assert!(fs::read(&p).unwrap() == data, "other bytes read");
        assert!(fuse_reads(&api) > before, "not served by the daemon");
        let before = fuse_reads(&api);
        for _ in 0..3 {
            assert!(fs::read(&p).unwrap() == data, "other bytes read");
        }
        assert_eq!(fuse_reads(&api), before, "warm reads reached the daemon");
        // Writes through the mount pass the cache: it stays right.
        (&log).write_all(b"changed").unwrap();
        let got = fs::read(&p).unwrap();
        assert_eq!(&got[1 << 20..], b"changed");
        // The object changed behind the kernel's back (same size): its
        // pages are dropped at the next open.
        let ino = fs::metadata(&p).unwrap().ino();
        std::thread::sleep(Duration::from_millis(20));
        if api.m.bucket().is_none() {
            let mut bytes = vec![9u8; (1 << 20) + 7];
            bytes[..5].copy_from_slice(b"fresh");
            api.m.set_object_bytes(ino, &bytes);
            let got = fs::read(&p).unwrap();
            assert_eq!(&got[..5], b"fresh");
            assert_eq!(got[1 << 19], 9);
        }
        drop(log);
        assert!(std::process::Command::new("chattr")
            .arg("-a")
            .arg(&p)
            .status()
            .unwrap()
            .success());
    });
}

#[test]
fn the_api_mode_change_refuses_or_waits_for_writers_too() {
    use artfs::auth::Role;
    common::engine::every_engine(|| {
        let api = common::api::Api::start(&["--mode", "rw"]);
        let admin = common::api::token("admin", Role::Admin);
        let post = |body| api.post_mode(body);
        let mut f = fs::File::create(api.m.path("w")).unwrap();
        f.write_all(b"1").unwrap();
        let r = post(serde_json::json!({ "mode": "ro" }));
        assert_eq!(r.status(), 409);
        assert!(r.text().unwrap().contains("/w ("));
        let r = post(serde_json::json!({ "mode": "ro", "force": true, "wait_secs": 0.5 }));
        assert_eq!(r.status(), 409);
        assert!(r.text().unwrap().contains("given up"));
        fs::write(api.m.path("still-rw"), b"ok").unwrap();
        let (client, url, token) = (api.client.clone(), api.url("/api/v1/mode"), admin.clone());
        let waiting = std::thread::spawn(move || {
            client
                .post(url)
                .bearer_auth(token)
                .json(&serde_json::json!({ "mode": "ro", "force": true, "wait_secs": 60 }))
                .send()
                .unwrap()
                .status()
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while code(fs::write(api.m.path("new"), b"n")) != libc::EROFS {
            assert!(
                std::time::Instant::now() < deadline,
                "new writers still let in"
            );
            let _ = fs::remove_file(api.m.path("new"));
            std::thread::sleep(Duration::from_millis(50));
        }
        f.write_all(b"2").unwrap();
        drop(f);
        assert_eq!(waiting.join().unwrap(), 200);
        assert_eq!(fs::read(api.m.path("w")).unwrap(), b"12");
        assert_eq!(code(fs::write(api.m.path("x"), b"x")), libc::EROFS);
    });
}

/// A read-only mount (`--read-only`, mount's ro) with a capacity: the
/// kernel refuses every change, so reads go by passthrough there too,
/// whatever the store's mode.
#[test]
fn a_read_only_mount_reads_by_passthrough_with_a_capacity() {
    common::engine::every_engine(|| {
        let mut api = common::api::Api::start(&["--capacity", "1G"]);
        let data: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 241) as u8).collect();
        fs::write(api.m.path("f"), &data).unwrap();
        api.m.remount_with(&["--read-only"]);
        api.wait();
        let before = fuse_reads(&api);
        assert!(
            fs::read(api.m.path("f")).unwrap() == data,
            "other bytes read"
        );
        assert_eq!(fuse_reads(&api), before, "reads reached the daemon");
        assert_eq!(code(fs::write(api.m.path("f"), b"x")), libc::EROFS);
        let mut m = api.m;
        m.unmount();
        m.assert_consistent();
    });
}

/// Under a capacity, readers go by passthrough, and a writer joins them:
/// the kernel sends its reads and writes to the daemon (FOPEN_DIRECT_IO),
/// which checks each against the capacity, while the readers go on by
/// passthrough and see its bytes at once. Readers that opened while the
/// store was ro are the same: after the change back to rw, writers open.
#[test]
fn under_a_capacity_writers_join_passthrough_readers_and_the_capacity_holds() {
    use std::os::unix::fs::FileExt;
    common::engine::every_engine(|| {
        let api = common::api::Api::start(&["--mode", "rw", "--capacity", "1M"]);
        let p = api.m.path("f");
        let data = vec![5u8; 100 << 10];
        fs::write(&p, &data).unwrap();
        let mode = |body| {
            let r = api.post_mode(body);
            assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
        };
        mode(serde_json::json!({ "mode": "ro", "force": true, "wait_secs": 20 }));
        let reader = fs::File::open(&p).unwrap();
        let before = fuse_reads(&api);
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut &reader, &mut got).unwrap();
        assert_eq!(got, data);
        assert_eq!(
            fuse_reads(&api),
            before,
            "the ro reader is not by passthrough"
        );
        mode(serde_json::json!({ "mode": "rw", "confirm": true }));
        // Write-only and read-write writers both join the readers.
        let w = OpenOptions::new().write(true).open(&p).unwrap();
        let rw = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        let writes = fuse_writes(&api);
        w.write_all_at(b"head", 0).unwrap();
        rw.write_all_at(b"tail", data.len() as u64).unwrap();
        assert_eq!(
            fuse_writes(&api),
            writes + 2,
            "a writer's write passed the daemon"
        );
        // Growth past the capacity is refused, through either.
        assert_eq!(code(w.write_all_at(&[1u8; 64], 2 << 20)), libc::ENOSPC);
        assert_eq!(code(rw.write_all_at(&[1u8; 64], 2 << 20)), libc::ENOSPC);
        // The passthrough reader sees the writes at once, still without
        // the daemon.
        let mut want = data.clone();
        want[..4].copy_from_slice(b"head");
        want.extend_from_slice(b"tail");
        let before = fuse_reads(&api);
        let mut got = vec![0u8; want.len() + 10];
        let n = reader.read_at(&mut got, 0).unwrap();
        assert_eq!(&got[..n], &want[..], "the reader sees other bytes");
        assert_eq!(fuse_reads(&api), before, "the reader left passthrough");
        // The writer's own reads come from the daemon, and are right.
        let mut back = [0u8; 4];
        rw.read_exact_at(&mut back, data.len() as u64).unwrap();
        assert_eq!(&back, b"tail");
        // A shared mapping of a writer maps the backing file: its bytes
        // land, and the close records them (size, hash).
        {
            // SAFETY: a shared mapping of 4 KiB of an open file, unmapped
            // below; nothing else maps it in this process.
            let map = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    std::os::fd::AsRawFd::as_raw_fd(&rw),
                    0,
                )
            };
            assert_ne!(map, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
            // SAFETY: within the 4 KiB mapped above.
            unsafe {
                std::ptr::copy_nonoverlapping(b"MAP!".as_ptr(), map.cast::<u8>().add(8), 4);
                libc::munmap(map, 4096);
            }
            want[8..12].copy_from_slice(b"MAP!");
        }
        drop((w, rw, reader));
        assert_eq!(fs::read(&p).unwrap(), want);
        let sha = common::getx(&p, "user.artstore.sha256").unwrap();
        assert_eq!(sha, common::archive::sha256_hex(&want).into_bytes());
        let mut m = api.m;
        m.unmount();
        m.assert_consistent();
    });
}

/// Under a capacity, writers of one file (write-only and read-write, all
/// served by the daemon) race each other to the limit while readers read
/// it by passthrough: no write passes the capacity, every byte a reader
/// sees is one a writer wrote (or a hole), every block a writer was told
/// it wrote holds its bytes, the reads never reach the daemon, and usage
/// is exact at commit.
#[test]
fn under_a_capacity_racing_writers_and_passthrough_readers_of_one_file() {
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    const CAP: u64 = 2 << 20;
    const BLOCK: usize = 4096;
    const WRITERS: usize = 4;
    common::engine::every_engine(|| {
        let api = common::api::Api::start(&["--capacity", "2M", "--trash-days", "0"]);
        let p = api.m.path("shared");
        fs::write(&p, b"").unwrap();
        let readers: Vec<fs::File> = (0..2).map(|_| fs::File::open(&p).unwrap()).collect();
        let reads_before = fuse_reads(&api);
        let done = AtomicBool::new(false);
        let written: Vec<Vec<u64>> = std::thread::scope(|sc| {
            for r in &readers {
                let done = &done;
                sc.spawn(move || {
                    let mut buf = vec![0u8; CAP as usize + BLOCK];
                    while !done.load(Ordering::Relaxed) {
                        let n = r.read_at(&mut buf, 0).unwrap();
                        assert!(n as u64 <= CAP, "a reader saw {n} bytes");
                        for (i, block) in buf[..n].chunks(BLOCK).enumerate() {
                            let own = (i % WRITERS) as u8 + 1;
                            assert!(
                                block.iter().all(|&b| b == 0 || b == own),
                                "block {i} holds bytes no writer wrote there"
                            );
                        }
                    }
                });
            }
            let writers: Vec<_> = (0..WRITERS)
                .map(|t| {
                    let p = &p;
                    sc.spawn(move || {
                        let f = OpenOptions::new()
                            .read(t % 2 == 1)
                            .write(true)
                            .open(p)
                            .unwrap();
                        let mut mine = Vec::new();
                        // Twice what fits, should the capacity not hold.
                        for k in 0..2 * CAP as usize / (BLOCK * WRITERS) {
                            let off = ((k * WRITERS + t) * BLOCK) as u64;
                            match f.write_all_at(&[t as u8 + 1; BLOCK], off) {
                                Ok(()) => mine.push(off),
                                Err(e) => {
                                    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                                    break;
                                }
                            }
                        }
                        mine
                    })
                })
                .collect();
            let w = writers.into_iter().map(|h| h.join().unwrap()).collect();
            done.store(true, Ordering::Relaxed);
            w
        });
        assert_eq!(fuse_reads(&api), reads_before, "reads reached the daemon");
        drop(readers);
        let size = fs::metadata(&p).unwrap().len();
        assert!(size <= CAP, "the file grew to {size}, past the capacity");
        let got = fs::read(&p).unwrap();
        for (t, offs) in written.iter().enumerate() {
            assert!(!offs.is_empty(), "writer {t} wrote nothing");
            for &o in offs {
                let block = &got[o as usize..o as usize + BLOCK];
                assert!(
                    block.iter().all(|&b| b == t as u8 + 1),
                    "writer {t}'s block at {o}"
                );
            }
        }
        // The release of the last handle settles the usage: the file's size.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while CAP - df(&api.m.mnt).1 != size {
            assert!(
                std::time::Instant::now() < deadline,
                "usage {} for a file of {size}",
                CAP - df(&api.m.mnt).1
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut m = api.m;
        m.unmount();
        m.assert_consistent();
    });
}

/// Under a capacity, sendfile(2), splice(2) and copy_file_range(2) into a
/// file open for writing reach the daemon as writes do (FOPEN_DIRECT_IO),
/// also while a reader holds the file by passthrough: none of them passes
/// the capacity (the hole `--capacity-passthrough` leaves is not in the
/// default).
#[test]
fn under_a_capacity_sendfile_splice_and_copy_file_range_stop_at_it() {
    use std::os::fd::AsRawFd;
    common::engine::every_engine(|| {
        const CAP: u64 = 4 << 20;
        let m = Mount::with_args(&["--capacity", "4M", "--trash-days", "0"]);
        let outside = common::ext4_dir();
        let src_out = outside.path().join("src");
        fs::write(&src_out, vec![7u8; 3 << 20]).unwrap();
        let src_in = m.path("src");
        fs::write(&src_in, vec![8u8; 1 << 20]).unwrap();
        let used = || CAP - df(&m.mnt).1;
        for how in ["sendfile", "splice", "copy_file_range"] {
            let p = m.path(how);
            fs::write(&p, b"x").unwrap();
            let reader = fs::File::open(&p).unwrap();
            let w = OpenOptions::new().write(true).open(&p).unwrap();
            let src = fs::File::open(if how == "copy_file_range" {
                &src_in
            } else {
                &src_out
            })
            .unwrap();
            let (sfd, wfd) = (src.as_raw_fd(), w.as_raw_fd());
            let mut moved = 0u64;
            let mut out_off: libc::loff_t = 1;
            let err = loop {
                let mut in_off: libc::loff_t = 0;
                // SAFETY: plain syscalls on descriptors held above, with
                // offsets that live across the call.
                let n = unsafe {
                    match how {
                        "sendfile" => {
                            libc::lseek(wfd, out_off, libc::SEEK_SET);
                            libc::sendfile(wfd, sfd, &mut in_off, 1 << 20)
                        }
                        "splice" => {
                            let mut pipe = [0; 2];
                            assert_eq!(libc::pipe(pipe.as_mut_ptr()), 0);
                            let got = libc::splice(
                                sfd,
                                &mut in_off,
                                pipe[1],
                                std::ptr::null_mut(),
                                64 << 10,
                                0,
                            );
                            assert!(got > 0, "{}", std::io::Error::last_os_error());
                            let n = libc::splice(
                                pipe[0],
                                std::ptr::null_mut(),
                                wfd,
                                &mut out_off,
                                got as usize,
                                0,
                            );
                            let e = std::io::Error::last_os_error();
                            libc::close(pipe[0]);
                            libc::close(pipe[1]);
                            if n < 0 {
                                break e;
                            }
                            out_off -= n as libc::loff_t;
                            n
                        }
                        _ => libc::copy_file_range(sfd, &mut in_off, wfd, &mut out_off, 1 << 20, 0),
                    }
                };
                if n < 0 {
                    break std::io::Error::last_os_error();
                }
                assert!(n > 0, "{how}: nothing moved before the capacity");
                moved += n as u64;
                // The source and what moved must fit (stop before BACKING
                // fills, should it pass).
                assert!(moved + (1 << 20) < CAP, "{how} passed the capacity");
                if how != "copy_file_range" {
                    out_off += n as libc::loff_t;
                }
            };
            assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{how}: {err}");
            let size = fs::metadata(&p).unwrap().len();
            assert_eq!(size, 1 + moved, "{how}");
            assert!(moved >= 1 << 20, "{how} stopped early: {moved}");
            // The reader, by passthrough, sees what landed.
            let mut tail = [0u8; 1];
            std::os::unix::fs::FileExt::read_exact_at(&reader, &mut tail, size - 1).unwrap();
            assert_ne!(tail[0], 0, "{how}");
            drop((reader, w));
            fs::remove_file(&p).unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while used() > 1 << 20 {
                assert!(std::time::Instant::now() < deadline, "space not given back");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
}

/// Reads go by passthrough in rw and in ro (issue 19), with a capacity
/// too (a reader has nothing for the daemon to check): the bytes are right
/// and the daemon serves no READ for them (`artfs_fuse_ops_total{op="read"}`
/// stays put), while a write in ro is still refused with EROFS.
#[test]
fn ro_mode_reads_go_by_passthrough() {
    common::engine::every_engine(|| {
        let data: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 251) as u8).collect();
        for (args, capacity) in [
            (vec!["--mode", "rw"], false),
            (vec!["--mode", "rw", "--capacity", "1G"], true),
        ] {
            let api = common::api::Api::start(&args);
            fs::write(api.m.path("f"), &data).unwrap();
            let cold_read = || {
                let f = fs::File::open(api.m.path("f")).unwrap();
                // Cold: what is read comes from the object, not a page
                // cache the write left.
                drop_cached_pages(&f);
                let before = fuse_reads(&api);
                let mut got = Vec::new();
                std::io::Read::read_to_end(&mut &f, &mut got).unwrap();
                assert!(got == data, "read returned other bytes");
                (f, fuse_reads(&api) - before)
            };
            if capacity {
                let (_, served) = cold_read();
                assert_eq!(served, 0, "rw reads with a capacity reached the daemon");
            }
            // The write's close reaches the daemon after `write` returns:
            // wait for it rather than be refused.
            let r =
                api.post_mode(serde_json::json!({ "mode": "ro", "force": true, "wait_secs": 20 }));
            assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
            let (f, served) = cold_read();
            assert_eq!(served, 0, "ro reads reached the daemon: {served} READs");
            assert_eq!(code(fs::write(api.m.path("f"), b"x")), libc::EROFS);
            drop(f);
            let mut m = api.m;
            m.unmount();
            m.assert_consistent();
        }
    });
}
