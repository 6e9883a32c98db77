//! POSIX ACLs (`system.posix_acl_access`, `system.posix_acl_default`) as
//! on ext4 with acl: the same sequence of `setfacl`/`getfacl`, creates,
//! chmods and accesses as another user runs on a local ext4 directory and
//! on artfs, and their transcripts must be equal; ACLs survive a remount
//! and `artfs rebuild`; `cp -a` and `rsync -aAX` carry them in; the HTTP
//! door honours them as the kernel does for the mount.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use artfs::auth::Role;
use common::{code, ext4_dir, getx, setx, Mount};

const NOBODY: u32 = 65534;

/// Run `script` with `sh` in `dir`: stdout and stderr together, each
/// command's status echoed by the script where it matters.
fn sh(dir: &Path, script: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("exec 2>&1\n{script}"))
        .current_dir(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run as nobody (no groups), then echo the status.
const AS_NOBODY: &str =
    "as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups \"$@\"; echo \"rc=$?\"; }\n";

/// The sequence compared with ext4: named users and groups, the mask and
/// chmod, equivalent ACLs, default ACLs and what new files, directories
/// and FIFOs inherit (with and without a umask), setgid after an ACL set.
const SCENARIO: &str = r#"
umask 022
echo secret > f; chmod 640 f
echo '# nobody, before'; as_nobody cat f
setfacl -m u:nobody:rw f; echo "setfacl rc=$?"
getfacl f; stat -c '%A' f
echo '# nobody, named user rw'; as_nobody cat f; as_nobody sh -c 'echo more >> f'
setfacl -m m::r f; getfacl f; stat -c '%A' f
echo '# mask r: read yes, write no'; as_nobody cat f; as_nobody sh -c 'echo more >> f'
chmod 660 f; echo '# chmod 660 sets the mask'; getfacl f
chmod o+r f; setfacl -m m::- f; echo '# mask ---: the mode group bits are clear, other decides'; as_nobody cat f
setfacl -m g:nobody:r,u:nobody:- f; getfacl f
setfacl -x u:nobody f; getfacl f
setfacl -b f; echo '# removed'; getfacl f; stat -c '%A' f; getfattr -m - f
setfacl --set u::rw,g::r,o::- f; echo '# equivalent: only the mode'; getfacl f; stat -c '%A' f; getfattr -m - f
setfacl -b f; echo "setfacl -b again rc=$?"
mkdir d; setfacl -d -m u:nobody:rwx,g::rx d; echo "setfacl -d rc=$?"; getfacl d
touch d/file; mkdir d/sub; mkfifo d/fifo; ln -s file d/link
(umask 077; touch d/file2; mkdir d/sub2)
echo 'x' > d/redirected
getfacl d/file d/sub d/fifo d/file2 d/sub2 d/redirected
stat -c '%n %A' d/file d/sub d/fifo d/file2 d/sub2 d/redirected
getfattr -h -m - d/link
setfacl -d --set u::rwx,g::rx,o::rx d
(umask 077; touch d/min; mkdir d/mind)
echo '# a minimal default ACL: no access ACL, umask ignored'; getfacl d/min d/mind; stat -c '%n %A' d/min d/mind
setfacl -k d; (umask 027; touch d/after; mkdir d/afterd); echo '# default removed: umask'; stat -c '%n %A' d/after d/afterd; getfacl d/afterd
touch sg; chown 65534:0 sg; chmod 2770 sg
as_nobody setfacl -m u:nobody:rwx sg; echo '# setgid dropped: nobody is not in group 0'; stat -c '%A' sg
mkdir sgd; chown 65534:0 sgd; chmod 2770 sgd
setfacl -m u:nobody:rwx sgd; echo '# root keeps setgid'; stat -c '%A' sgd
echo '# not the owner'; as_nobody setfacl -m u:nobody:rwx f; getfacl f
echo '# everything'; find . ! -type l | sort | xargs getfacl -p
"#;

fn scenario(root: &Path) -> String {
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
    sh(root, &format!("{AS_NOBODY}{SCENARIO}"))
}

/// A minimal valid access ACL (rw-, r--, r--) in the xattr format.
fn minimal_acl() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm) in [(1u16, 6u16), (4, 4), (0x20, 4)] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&u32::MAX.to_le_bytes());
    }
    v
}

/// The errnos of raw setxattr/removexattr calls on ACL names.
fn errnos(root: &Path) -> Vec<(&'static str, i32)> {
    let f = root.join("e-file");
    let d = root.join("e-dir");
    fs::write(&f, b"x").unwrap();
    fs::create_dir(&d).unwrap();
    let ok = minimal_acl();
    let mut out = vec![
        (
            "default on a file",
            code(setx(&f, "system.posix_acl_default", &ok)),
        ),
        (
            "default removed from a file",
            code(common::removex(&f, "system.posix_acl_default")),
        ),
        (
            "default on a dir",
            code(setx(&d, "system.posix_acl_default", &ok)),
        ),
        (
            "read back",
            code(getx(&d, "system.posix_acl_default").map(|v| assert_eq!(v, ok))),
        ),
        (
            "truncated",
            code(setx(&f, "system.posix_acl_access", &ok[..9])),
        ),
        (
            "bad version",
            code(setx(&f, "system.posix_acl_access", &[1, 0, 0, 0])),
        ),
        (
            "no other entry",
            code(setx(&f, "system.posix_acl_access", &ok[..20])),
        ),
        (
            "absent access ACL",
            code(getx(&f, "system.posix_acl_access")),
        ),
        (
            "remove an absent one",
            code(common::removex(&f, "system.posix_acl_access")),
        ),
        ("other system names", code(setx(&f, "system.foo", b"1"))),
    ];
    std::os::unix::fs::symlink("e-file", root.join("e-link")).unwrap();
    out.push((
        "on a symlink",
        code(setx(&root.join("e-link"), "system.posix_acl_access", &ok)),
    ));
    // Not the owner.
    let c = std::ffi::CString::new(f.as_os_str().as_encoded_bytes()).unwrap();
    let n = c"system.posix_acl_access";
    let e = common::as_user(NOBODY, NOBODY, || unsafe {
        if libc::setxattr(c.as_ptr(), n.as_ptr(), ok.as_ptr().cast(), ok.len(), 0) == 0 {
            0
        } else {
            *libc::__errno_location()
        }
    });
    out.push(("not the owner", e));
    out
}

#[test]
fn acls_behave_as_on_ext4() {
    let ext4 = ext4_dir();
    let want = scenario(ext4.path());
    let want_errnos = errnos(ext4.path());
    use libc::{EACCES, EINVAL, ENODATA, EOPNOTSUPP, EPERM};
    assert_eq!(
        want_errnos.iter().map(|(_, e)| *e).collect::<Vec<_>>(),
        [EACCES, 0, 0, 0, EINVAL, EOPNOTSUPP, EINVAL, ENODATA, 0, EOPNOTSUPP, EOPNOTSUPP, EPERM],
        "ext4 reference changed? {want_errnos:?}"
    );
    assert!(
        want.contains("user:nobody:rw-"),
        "the reference ext4 directory lacks ACL support?\n{want}"
    );
    common::engine::every_engine(|| {
        let m = Mount::new();
        fs::set_permissions(m.mnt.parent().unwrap(), fs::Permissions::from_mode(0o755)).unwrap();
        let dir = m.path("t");
        fs::create_dir(&dir).unwrap();
        let got = scenario(&dir);
        if got != want {
            for (i, (a, b)) in want.lines().zip(got.lines()).enumerate() {
                if a != b {
                    panic!(
                        "artfs differs from ext4 at line {}: ext4 {a:?}, artfs {b:?}\n--- ext4:\n{want}\n--- artfs:\n{got}",
                        i + 1
                    );
                }
            }
            panic!("artfs differs from ext4 in length\n--- ext4:\n{want}\n--- artfs:\n{got}");
        }
        assert_eq!(errnos(&dir), want_errnos);
    });
}

/// `getfacl` and `getfattr -d` of everything under `dir` (relative
/// paths, in name order: readdir's order differs between filesystems).
fn acls_of(dir: &Path) -> String {
    sh(
        dir,
        "for p in $(find . | sort); do getfacl -p \"$p\"; getfattr -h -m - -d \"$p\"; done",
    )
}

#[test]
fn acls_survive_a_remount_and_a_rebuild() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        sh(
            &m.mnt,
            "mkdir -p d/e; touch d/f; setfacl -m u:nobody:rwx,g:nobody:r d/f; \
             setfacl -d -m u:nobody:rx d; touch d/inherited; mkdir d/sub",
        );
        let before = acls_of(&m.mnt);
        assert!(before.contains("default:user:nobody:r-x"), "{before}");
        assert!(before.contains("user:nobody:rwx"), "{before}");
        m.remount();
        assert_eq!(acls_of(&m.mnt), before, "after a remount");
        m.unmount();
        m.lose_tables();
        if m.bucket().is_some() {
            fs::remove_dir_all(&m.backing).unwrap();
        }
        let out = m
            .command("rebuild")
            .env("ARTFS_LOG", "warn")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", common::output_text(&out));
        m.mount();
        assert_eq!(acls_of(&m.mnt), before, "after a rebuild");
    });
}

#[test]
fn copying_tools_carry_acls_from_ext4() {
    let src = ext4_dir();
    sh(
        src.path(),
        "mkdir -p tree/d; echo a > tree/f; setfacl -m u:nobody:rw,g:nobody:r,m::rw tree/f; \
         setfacl -d -m u:nobody:rwx tree/d; touch tree/d/g; mkdir tree/d/sub",
    );
    let want = acls_of(&src.path().join("tree"));
    assert!(want.contains("user:nobody:rw-"), "{want}");
    common::engine::every_engine(|| {
        let m = Mount::new();
        let cp = Command::new("cp")
            .arg("-a")
            .arg(src.path().join("tree"))
            .arg(m.path("cp"))
            .output()
            .unwrap();
        assert!(cp.status.success(), "{}", common::output_text(&cp));
        assert!(cp.stderr.is_empty(), "{}", common::output_text(&cp));
        assert_eq!(acls_of(&m.path("cp")), want, "cp -a");
        let rs = Command::new("rsync")
            .arg("-aAX")
            .arg(format!("{}/", src.path().join("tree").display()))
            .arg(m.path("rs"))
            .output()
            .unwrap();
        assert!(rs.status.success(), "{}", common::output_text(&rs));
        assert!(rs.stderr.is_empty(), "{}", common::output_text(&rs));
        assert_eq!(acls_of(&m.path("rs")), want, "rsync -aAX");
    });
}

/// The HTTP door checks access ACLs as the kernel does for the mount: a
/// named user's entry grants, the mask limits it.
#[test]
fn the_http_door_honours_access_acls() {
    common::engine::every_engine(|| {
        let api = common::api::Api::start(&["--api-uid", "65534", "--api-gid", "65534"]);
        let m = &api.m;
        fs::write(m.path("f"), b"for nobody").unwrap();
        fs::set_permissions(m.path("f"), fs::Permissions::from_mode(0o640)).unwrap();
        let tok = common::api::token("alice", Role::User);
        let status = || {
            api.client
                .get(api.url("/api/v1/fs/f"))
                .bearer_auth(&tok)
                .send()
                .unwrap()
                .status()
                .as_u16()
        };
        assert_eq!(status(), 403, "mode 640, root's");
        sh(&m.mnt, "setfacl -m u:nobody:r f");
        assert_eq!(status(), 200, "a named user entry grants");
        sh(&m.mnt, "setfacl -m m::w f");
        assert_eq!(status(), 403, "the mask limits it");
        sh(&m.mnt, "setfacl -m g:65534:r,m::r,u:nobody:- f");
        assert_eq!(status(), 403, "the named user entry decides, not a group");
        let acl = sh(&m.mnt, "setfacl -x u:nobody f; getfacl f");
        assert_eq!(status(), 200, "a named group entry grants:\n{acl}");
        // A directory only an ACL lets nobody write into; an upload there
        // inherits its default ACL.
        sh(
            &m.mnt,
            "mkdir d; chmod 755 d; setfacl -m u:nobody:rwx d; setfacl -d -m u:nobody:rwx d",
        );
        let r = api
            .client
            .put(api.url("/api/v1/fs/d/up.txt"))
            .bearer_auth(&tok)
            .body(b"uploaded".to_vec())
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "{}", r.text().unwrap());
        let acl = sh(&m.mnt, "getfacl -p d/up.txt");
        assert!(acl.contains("\nuser:nobody:rwx"), "{acl}");
        assert!(acl.contains("\nmask::"), "{acl}");
        sh(&m.mnt, "setfacl -x u:nobody d");
        let r = api
            .client
            .put(api.url("/api/v1/fs/d/up2.txt"))
            .bearer_auth(&tok)
            .body(b"refused".to_vec())
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "without the ACL entry");
    });
}
