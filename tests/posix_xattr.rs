//! Extended attributes through real syscalls: user.* get/set/list/remove,
//! XATTR_CREATE / XATTR_REPLACE, the size-probe protocol and ERANGE, the
//! 64 KiB limit, getfattr's view, and persistence across a remount.

mod common;
use common::ext4_dir;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

use common::Mount;

fn cstr(s: &[u8]) -> CString {
    CString::new(s).unwrap()
}

fn cpath(p: &Path) -> CString {
    cstr(p.as_os_str().as_bytes())
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap()
}

fn setx(p: &Path, name: &str, value: &[u8], flags: libc::c_int) -> Result<(), i32> {
    let (c, n) = (cpath(p), cstr(name.as_bytes()));
    // SAFETY: valid C strings and buffer.
    let r = unsafe {
        libc::setxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(last_errno())
    }
}

/// getxattr with an explicit buffer size; Ok(bytes) or errno.
fn getx_sized(p: &Path, name: &str, size: usize) -> Result<Vec<u8>, i32> {
    let (c, n) = (cpath(p), cstr(name.as_bytes()));
    let mut buf = vec![0u8; size];
    // SAFETY: valid C strings; buffer of `size` bytes (null when 0).
    let r = unsafe {
        libc::getxattr(
            c.as_ptr(),
            n.as_ptr(),
            if size == 0 {
                std::ptr::null_mut()
            } else {
                buf.as_mut_ptr().cast()
            },
            size,
        )
    };
    if r < 0 {
        return Err(last_errno());
    }
    if size == 0 {
        // The probe: return a vector of the reported length.
        return Ok(vec![0; r as usize]);
    }
    buf.truncate(r as usize);
    Ok(buf)
}

fn getx(p: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let len = getx_sized(p, name, 0)?.len();
    getx_sized(p, name, len.max(1)).map(|mut v| {
        v.truncate(len);
        v
    })
}

fn listx_sized(p: &Path, size: usize) -> Result<Vec<u8>, i32> {
    let c = cpath(p);
    let mut buf = vec![0u8; size];
    // SAFETY: valid C string; buffer of `size` bytes (null when 0).
    let r = unsafe {
        libc::listxattr(
            c.as_ptr(),
            if size == 0 {
                std::ptr::null_mut()
            } else {
                buf.as_mut_ptr().cast()
            },
            size,
        )
    };
    if r < 0 {
        return Err(last_errno());
    }
    if size == 0 {
        return Ok(vec![0; r as usize]);
    }
    buf.truncate(r as usize);
    Ok(buf)
}

/// The user.* names, sorted.
fn user_names(p: &Path) -> Vec<String> {
    let len = listx_sized(p, 0).unwrap().len();
    let raw = if len == 0 {
        vec![]
    } else {
        listx_sized(p, len).unwrap()
    };
    assert!(
        raw.is_empty() || raw.ends_with(&[0]),
        "list not NUL-terminated"
    );
    let mut v: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        // artfs's own archive attributes are checked in metadata.rs.
        .filter(|s| s.starts_with("user.") && !s.starts_with("user.artstore."))
        .collect();
    v.sort();
    v
}

fn removex(p: &Path, name: &str) -> Result<(), i32> {
    let (c, n) = (cpath(p), cstr(name.as_bytes()));
    // SAFETY: valid C strings.
    if unsafe { libc::removexattr(c.as_ptr(), n.as_ptr()) } == 0 {
        Ok(())
    } else {
        Err(last_errno())
    }
}

#[test]
fn set_get_list_remove_user_xattrs() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        let f = m.path("f");
        fs::write(&f, b"data").unwrap();
        assert_eq!(user_names(&f), Vec::<String>::new());
        setx(&f, "user.alpha", b"1", 0).unwrap();
        setx(&f, "user.beta", b"two words", 0).unwrap();
        setx(&f, "user.empty", b"", 0).unwrap();
        let binary: Vec<u8> = (0..=255).collect();
        setx(&f, "user.bin", &binary, 0).unwrap();
        assert_eq!(getx(&f, "user.alpha").unwrap(), b"1");
        assert_eq!(getx(&f, "user.beta").unwrap(), b"two words");
        assert_eq!(getx(&f, "user.empty").unwrap(), b"");
        assert_eq!(getx(&f, "user.bin").unwrap(), binary);
        assert_eq!(
            user_names(&f),
            ["user.alpha", "user.beta", "user.bin", "user.empty"]
        );
        // Overwrite without flags, then remove.
        setx(&f, "user.alpha", b"changed", 0).unwrap();
        assert_eq!(getx(&f, "user.alpha").unwrap(), b"changed");
        removex(&f, "user.beta").unwrap();
        assert_eq!(getx(&f, "user.beta"), Err(libc::ENODATA));
        assert_eq!(removex(&f, "user.beta"), Err(libc::ENODATA));
        assert_eq!(user_names(&f), ["user.alpha", "user.bin", "user.empty"]);
        // Content is untouched; directories and symlinks' targets carry their own.
        assert_eq!(fs::read(&f).unwrap(), b"data");
        fs::create_dir(m.path("d")).unwrap();
        setx(&m.path("d"), "user.dir", b"on a dir", 0).unwrap();
        assert_eq!(getx(&m.path("d"), "user.dir").unwrap(), b"on a dir");
        assert_eq!(getx(&f, "user.dir"), Err(libc::ENODATA));
        // Hard links share them.
        fs::hard_link(&f, m.path("link")).unwrap();
        assert_eq!(getx(&m.path("link"), "user.alpha").unwrap(), b"changed");
        setx(&m.path("link"), "user.via-link", b"x", 0).unwrap();
        assert_eq!(getx(&f, "user.via-link").unwrap(), b"x");
    });
}

#[test]
fn create_and_replace_flags() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        let f = m.path("f");
        fs::write(&f, b"").unwrap();
        assert_eq!(
            setx(&f, "user.k", b"v", libc::XATTR_REPLACE),
            Err(libc::ENODATA)
        );
        assert_eq!(getx(&f, "user.k"), Err(libc::ENODATA));
        setx(&f, "user.k", b"v1", libc::XATTR_CREATE).unwrap();
        assert_eq!(
            setx(&f, "user.k", b"v2", libc::XATTR_CREATE),
            Err(libc::EEXIST)
        );
        assert_eq!(getx(&f, "user.k").unwrap(), b"v1");
        setx(&f, "user.k", b"v3", libc::XATTR_REPLACE).unwrap();
        assert_eq!(getx(&f, "user.k").unwrap(), b"v3");
        // Both flags at once: Linux treats it as CREATE|REPLACE, which ext4
        // answers by the first check that fails.
        let reference = ext4_dir();
        let r = reference.path().join("f");
        fs::write(&r, b"").unwrap();
        setx(&r, "user.k", b"v", 0).unwrap();
        let both = libc::XATTR_CREATE | libc::XATTR_REPLACE;
        assert_eq!(
            setx(&f, "user.k", b"x", both),
            setx(&r, "user.k", b"x", both)
        );
        assert_eq!(
            setx(&f, "user.new", b"x", both),
            setx(&r, "user.new", b"x", both)
        );
        // After all that failing, the attribute is as last set.
        assert_eq!(getx(&f, "user.k").unwrap(), b"v3");
        assert_eq!(user_names(&f), ["user.k"]);
    });
}

#[test]
fn size_probe_and_erange() {
    common::engine::every_engine(|| {
        // With the computed user.artstore.* names in the list too.
        let m = Mount::with_args(&["--list-computed-xattrs"]);
        let f = m.path("f");
        fs::write(&f, b"").unwrap();
        setx(&f, "user.ten", b"0123456789", 0).unwrap();
        setx(&f, "user.other", b"x", 0).unwrap();
        // Size 0 probes.
        assert_eq!(getx_sized(&f, "user.ten", 0).unwrap().len(), 10);
        // Too small is ERANGE, exact and larger are fine.
        assert_eq!(getx_sized(&f, "user.ten", 9), Err(libc::ERANGE));
        assert_eq!(getx_sized(&f, "user.ten", 1), Err(libc::ERANGE));
        assert_eq!(getx_sized(&f, "user.ten", 10).unwrap(), b"0123456789");
        assert_eq!(getx_sized(&f, "user.ten", 100).unwrap(), b"0123456789");
        // The same protocol for listxattr.
        // Mounted to list its computed archive attributes (user.artstore.*)
        // too: the probe must announce the whole list.
        let full = listx_sized(&f, 65536).unwrap();
        for n in [&b"user.other\0"[..], b"user.ten\0"] {
            assert!(full.windows(n.len()).any(|w| w == n));
        }
        let want = full.len();
        let probed = listx_sized(&f, 0).unwrap().len();
        assert_eq!(probed, want);
        assert_eq!(listx_sized(&f, probed - 1), Err(libc::ERANGE));
        assert_eq!(listx_sized(&f, 1), Err(libc::ERANGE));
        let list = listx_sized(&f, probed).unwrap();
        assert_eq!(list.len(), probed);
        let mut names: Vec<&[u8]> = list
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty() && !s.starts_with(b"user.artstore."))
            .collect();
        names.sort();
        assert_eq!(names, [&b"user.other"[..], b"user.ten"]);
        // A missing attribute probes as ENODATA.
        assert_eq!(getx_sized(&f, "user.none", 0), Err(libc::ENODATA));
    });
}

#[test]
fn value_size_limits() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        let f = m.path("f");
        fs::write(&f, b"").unwrap();
        // 64 KiB exactly is allowed (XATTR_SIZE_MAX); one byte more is E2BIG.
        let max: Vec<u8> = (0..65536).map(|i| (i % 253) as u8).collect();
        setx(&f, "user.max", &max, 0).unwrap();
        assert_eq!(getx(&f, "user.max").unwrap(), max);
        let over = vec![1u8; 65537];
        assert_eq!(setx(&f, "user.over", &over, 0), Err(libc::E2BIG));
        assert_eq!(getx(&f, "user.over"), Err(libc::ENODATA));
        // Names: 255 bytes is fine, longer is ERANGE; an empty name is ERANGE.
        let long_ok = format!("user.{}", "n".repeat(250));
        setx(&f, &long_ok, b"v", 0).unwrap();
        assert_eq!(getx(&f, &long_ok).unwrap(), b"v");
        let too_long = format!("user.{}", "n".repeat(251));
        assert_eq!(setx(&f, &too_long, b"v", 0), Err(libc::ERANGE));
        assert_eq!(setx(&f, "", b"v", 0), Err(libc::ERANGE));
        m.remount();
        assert_eq!(getx(&f, "user.max").unwrap(), max);
        assert_eq!(getx(&f, &long_ok).unwrap(), b"v");
    });
}

/// Namespace handling errnos, run on `p`.
#[test]
fn attributes_stop_with_enospc_while_their_names_still_list() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        let f = m.path("many");
        fs::write(&f, b"").unwrap();
        let mut added = 0;
        let err = loop {
            // 250-byte names: the 64 KiB list is full after about 260.
            let name = format!("user.{added:0>245}");
            match setx(&f, &name, b"v", 0) {
                Ok(()) => added += 1,
                Err(e) => break e,
            }
            assert!(added < 1000, "no limit on the number of attributes");
        };
        assert_eq!(err, libc::ENOSPC);
        assert!(added > 200, "only {added} attributes fit");
        // All of them list, and replacing a value still works when full.
        let list = listx_sized(&f, 64 * 1024).unwrap();
        assert_eq!(
            list.split(|b| *b == 0)
                .filter(|n| n.starts_with(b"user.0"))
                .count(),
            added
        );
        assert_eq!(setx(&f, &format!("user.{:0>245}", 0), b"w", 0), Ok(()));
        assert_eq!(getx(&f, &format!("user.{:0>245}", 0)).unwrap(), b"w");
    });
}

fn namespace_errnos(p: &Path) -> Vec<i32> {
    let e = |r: Result<(), i32>| r.err().unwrap_or(0);
    let g = |r: Result<Vec<u8>, i32>| r.err().unwrap_or(0);
    vec![
        e(setx(p, "nonamespace", b"v", 0)),
        e(setx(p, "bogus.name", b"v", 0)),
        e(setx(p, "user.", b"v", 0)),
        g(getx(p, "nonamespace")),
        e(removex(p, "nonamespace")),
        g(getx(p, "user.")),
        g(getx(p, "user.missing")),
        e(removex(p, "user.missing")),
        e(setx(p, "trusted.t", b"root may", 0)),
        g(getx(p, "trusted.t")),
    ]
}

#[test]
fn namespace_errnos_match_ext4() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        fs::write(m.path("f"), b"").unwrap();
        let got = namespace_errnos(&m.path("f"));
        let reference = ext4_dir();
        fs::write(reference.path().join("f"), b"").unwrap();
        let want = namespace_errnos(&reference.path().join("f"));
        use libc::*;
        assert_eq!(
            want,
            vec![
                EOPNOTSUPP, EOPNOTSUPP, EINVAL, EOPNOTSUPP, EOPNOTSUPP, EINVAL, ENODATA, ENODATA,
                0, 0
            ],
            "ext4 reference changed?"
        );
        assert_eq!(got, want);
    });
}

/// A file without an SELinux label answers as a filesystem without labels
/// (EOPNOTSUPP), so `ls -l` asks once, not once per entry; a label that is
/// set is kept and returned like any attribute.
#[test]
fn a_missing_selinux_label_is_unsupported_so_ls_asks_once() {
    common::engine::every_engine(|| {
        let api = common::api::Api::start(&[]);
        let d = api.m.mnt.join("d");
        fs::create_dir(&d).unwrap();
        let n = 300;
        for i in 0..n {
            fs::write(d.join(format!("f{i:03}")), b"x").unwrap();
        }
        let f = d.join("f000");
        assert_eq!(getx(&f, "security.selinux"), Err(libc::EOPNOTSUPP));
        assert_eq!(getx(&f, "security.other"), Err(libc::ENODATA));
        let ls = || {
            let out = Command::new("ls").arg("-l").arg(&d).output().unwrap();
            assert!(out.status.success(), "ls -l failed");
            let lines = out.stdout.split(|b| *b == b'\n');
            assert_eq!(lines.filter(|l| l.starts_with(b"-")).count(), n);
        };
        // The first listing also loads each file's ACL into the kernel.
        ls();
        let before = api.fuse_ops("getxattr");
        ls();
        let asked = api.fuse_ops("getxattr") - before;
        assert!(asked < 5, "ls -l asked {asked} times for {n} entries");
        // A label set is data: kept, listed, returned, removable.
        let label = b"system_u:object_r:archive_t:s0\0";
        setx(&f, "security.selinux", label, 0).unwrap();
        assert_eq!(getx(&f, "security.selinux").unwrap(), label);
        let listed = listx_sized(&f, 4096).unwrap();
        assert!(listed
            .split(|b| *b == 0)
            .any(|name| name == b"security.selinux"));
        removex(&f, "security.selinux").unwrap();
        assert_eq!(getx(&f, "security.selinux"), Err(libc::EOPNOTSUPP));
    });
}

#[test]
fn xattrs_on_symlinks_and_special_files() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        fs::write(m.path("target"), b"").unwrap();
        std::os::unix::fs::symlink("target", m.path("l")).unwrap();
        // user.* is not allowed on a symlink itself (EPERM), as on ext4.
        let (c, n, v) = (cpath(&m.path("l")), cstr(b"user.x"), b"v");
        // SAFETY: valid C strings and buffer.
        let r = unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), v.as_ptr().cast(), 1, 0) };
        assert_eq!((r, last_errno()), (-1, libc::EPERM));
        // Through the symlink it lands on the target.
        setx(&m.path("l"), "user.x", b"v", 0).unwrap();
        assert_eq!(getx(&m.path("target"), "user.x").unwrap(), b"v");
        // On a FIFO, user.* is not allowed either (EPERM).
        nix::unistd::mkfifo(
            &m.path("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        assert_eq!(setx(&m.path("fifo"), "user.x", b"v", 0), Err(libc::EPERM));
    });
}

#[test]
fn getfattr_dump_shows_user_attributes() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        let f = m.path("f");
        fs::write(&f, b"").unwrap();
        setx(&f, "user.mime_type", b"text/plain", 0).unwrap();
        setx(&f, "user.checksum", b"abc123", 0).unwrap();
        setx(&f, "user.bin", &[0, 1, 2, 255], 0).unwrap();
        let run = |p: &Path| {
            let out = Command::new("getfattr")
                .args(["-d", "--absolute-names", "-e", "text"])
                .arg(p)
                .output()
                .expect("getfattr");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let text = run(&f);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], format!("# file: {}", f.display()));
        assert!(lines.contains(&"user.mime_type=\"text/plain\""), "{text}");
        assert!(lines.contains(&"user.checksum=\"abc123\""), "{text}");
        // The same attributes on ext4 dump identically (modulo the path).
        let reference = ext4_dir();
        let r = reference.path().join("f");
        fs::write(&r, b"").unwrap();
        setx(&r, "user.mime_type", b"text/plain", 0).unwrap();
        setx(&r, "user.checksum", b"abc123", 0).unwrap();
        setx(&r, "user.bin", &[0, 1, 2, 255], 0).unwrap();
        let body = |t: &str| -> BTreeMap<String, String> {
            t.lines()
                .skip(1)
                .filter(|l| !l.is_empty() && !l.starts_with("user.artstore."))
                .map(|l| {
                    let (k, v) = l.split_once('=').unwrap();
                    (k.to_string(), v.to_string())
                })
                .collect()
        };
        assert_eq!(body(&text), body(&run(&r)));
        // setfattr/getfattr round trip of a single value.
        let st = Command::new("setfattr")
            .args(["-n", "user.set_by_tool", "-v", "0x00ff10"])
            .arg(&f)
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(getx(&f, "user.set_by_tool").unwrap(), [0x00, 0xff, 0x10]);
        let out = Command::new("getfattr")
            .args(["--only-values", "-n", "user.checksum"])
            .arg(&f)
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"abc123");
    });
}

#[test]
fn xattrs_survive_remount_and_go_with_the_file() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        let f = m.path("f");
        fs::write(&f, b"").unwrap();
        fs::create_dir(m.path("d")).unwrap();
        for i in 0..50 {
            setx(
                &f,
                &format!("user.k{i:02}"),
                format!("value {i}").as_bytes(),
                0,
            )
            .unwrap();
        }
        setx(&m.path("d"), "user.on-dir", b"d", 0).unwrap();
        removex(&f, "user.k07").unwrap();
        m.remount();
        let names = user_names(&f);
        assert_eq!(names.len(), 49);
        assert!(!names.contains(&"user.k07".to_string()));
        for i in (0..50).filter(|i| *i != 7) {
            assert_eq!(
                getx(&f, &format!("user.k{i:02}")).unwrap(),
                format!("value {i}").as_bytes()
            );
        }
        assert_eq!(getx(&m.path("d"), "user.on-dir").unwrap(), b"d");
        // Renamed files keep theirs; a new file under an old name has none.
        fs::rename(&f, m.path("d/moved")).unwrap();
        assert_eq!(getx(&m.path("d/moved"), "user.k00").unwrap(), b"value 0");
        fs::write(&f, b"").unwrap();
        assert_eq!(user_names(&f), Vec::<String>::new());
        // Deleting the file deletes its attributes (a new inode starts clean).
        fs::remove_file(m.path("d/moved")).unwrap();
        m.remount();
        assert_eq!(user_names(&f), Vec::<String>::new());
        assert_eq!(user_names(&m.path("d")), ["user.on-dir"]);
    });
}

/// A listing with attributes (READDIRPLUS) loads its entries' inodes and
/// attribute lists a chunk at a time; what `stat` and getxattr answer
/// afterwards must be each file's own, also for files the small cache
/// has to evict again, and after changes made while the chunk was read.
#[test]
fn attributes_after_a_listing_are_each_files_own() {
    common::engine::every_engine(|| listing_then_attributes("200", 1200));
}

/// The same with a directory larger than a cache that holds several
/// chunks: a miss then loads the entry's whole chunk again (`core::listed`).
#[test]
fn attributes_after_a_listing_larger_than_the_cache_are_each_files_own() {
    common::engine::every_engine(|| listing_then_attributes("4096", 4500));
}

/// `n` files, every seventh with an attribute of its own, listed by `ls -l`
/// and then asked one by one, before and after a change to one of them.
fn listing_then_attributes(cache_entries: &str, n: usize) {
    let mut m = Mount::with_args(&["--cache-entries", cache_entries]);
    let d = m.path("d");
    fs::create_dir(&d).unwrap();
    let changed_one = n - 100;
    for i in 0..n {
        let f = d.join(format!("f{i:05}"));
        fs::write(&f, vec![b'x'; i % 97]).unwrap();
        if i % 7 == 0 {
            setx(&f, "user.n", i.to_string().as_bytes(), 0).unwrap();
        }
    }
    let check = |changed: usize| {
        // `ls -l` lists with attributes, then stats and asks each
        // entry's security and ACL attributes.
        let out = Command::new("ls").arg("-l").arg(&d).output().unwrap();
        assert!(out.status.success(), "ls -l failed");
        assert_eq!(
            out.stdout
                .split(|b| *b == b'\n')
                .filter(|l| l.starts_with(b"-"))
                .count(),
            n
        );
        for i in 0..n {
            let f = d.join(format!("f{i:05}"));
            let size = if i == changed { 1000 } else { (i % 97) as u64 };
            assert_eq!(
                fs::metadata(&f).unwrap().len(),
                size,
                "size of {}",
                f.display()
            );
            let want = if i % 7 == 0 || i == changed {
                Ok(i.to_string().into_bytes())
            } else {
                Err(libc::ENODATA)
            };
            assert_eq!(getx(&f, "user.n"), want, "user.n of {}", f.display());
        }
    };
    m.remount();
    check(usize::MAX);
    // A change after the entries were loaded is seen, not the loaded state.
    let f = d.join(format!("f{changed_one:05}"));
    fs::write(&f, vec![b'y'; 1000]).unwrap();
    setx(&f, "user.n", changed_one.to_string().as_bytes(), 0).unwrap();
    check(changed_one);
    check(changed_one);
    m.remount();
    check(changed_one);
}
