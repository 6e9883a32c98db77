//! Differential model test: random sequences of namespace, data, attribute
//! and xattr operations are applied both to an artfs mount and to a plain
//! directory on the local (ext4) filesystem. Every operation must give the
//! same result (value or errno) on both sides, and after every operation the
//! observable trees must agree: names, kinds, permission bits, owners, nlink,
//! sizes, contents, symlink targets and `user.*` xattrs. Inode numbers and
//! times are not compared.
//!
//! One artfs mount serves a whole test function; every proptest case works
//! in a fresh subdirectory (`case-N`) of it, and the reference side in a
//! fresh subdirectory of a temp dir with the same layout (so relative symlink
//! targets like `../a` resolve alike). `Remount` unmounts and remounts the
//! artfs side (after closing held descriptors on both sides).
//!
//! `PROPTEST_CASES` sets the number of cases (default below); failures print
//! the shrunk op sequence with per-op results and the first divergence.

mod common;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::strategy::Union;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};

/// Leaf names; any of them may end up a file, a directory or a symlink.
const NAMES: [&[u8]; 4] = [b"a", b"b", b"c", b"\xffz"];
const XNAMES: [&str; 3] = ["user.a", "user.b", "user.some.longer.name"];
const TARGETS: [&[u8]; 6] = [b"a", b"b", b"../a", b"nowhere", b"a/b", b"\xffz"];
const MODES: [u32; 8] = [0o644, 0o600, 0o755, 0o640, 0o2755, 0o4711, 0o1777, 0o000];
const SLOTS: usize = 3;
const DEFAULT_CASES: u32 = 64;
const MAX_OPS: usize = 30;
/// How often a shrunk failure is replayed to tell flaky from deterministic.
const REPLAYS: usize = 5;

// ---------------------------------------------------------------------------
// Operations

/// A path relative to the case root.
#[derive(Clone, PartialEq, Eq)]
struct P(Vec<u8>);

impl fmt::Debug for P {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OpenMode {
    ReadOnly,
    ReadWrite,
    Append,
    Trunc,
}

impl OpenMode {
    fn flags(self) -> i32 {
        match self {
            OpenMode::ReadOnly => libc::O_RDONLY,
            OpenMode::ReadWrite => libc::O_RDWR,
            OpenMode::Append => libc::O_WRONLY | libc::O_APPEND,
            OpenMode::Trunc => libc::O_RDWR | libc::O_TRUNC,
        }
    }
}

impl fmt::Debug for OpenMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OpenMode::ReadOnly => "O_RDONLY",
            OpenMode::ReadWrite => "O_RDWR",
            OpenMode::Append => "O_WRONLY|O_APPEND",
            OpenMode::Trunc => "O_RDWR|O_TRUNC",
        })
    }
}

#[derive(Clone)]
enum Op {
    /// open(O_CREAT|O_WRONLY [|O_EXCL]) + close.
    Create {
        path: P,
        excl: bool,
        mode: u32,
    },
    /// open(O_WRONLY [|O_APPEND]) + pwrite/write + close.
    Write {
        path: P,
        off: u64,
        len: usize,
        seed: u8,
        append: bool,
    },
    Truncate {
        path: P,
        size: u64,
    },
    /// renameat2 with flags 0, RENAME_NOREPLACE or RENAME_EXCHANGE.
    Rename {
        from: P,
        to: P,
        flags: u32,
    },
    Link {
        from: P,
        to: P,
    },
    Symlink {
        target: &'static [u8],
        path: P,
    },
    Unlink {
        path: P,
    },
    Mkdir {
        path: P,
        mode: u32,
    },
    Rmdir {
        path: P,
    },
    SetXattr {
        path: P,
        name: &'static str,
        len: usize,
        seed: u8,
        flags: i32,
    },
    RemoveXattr {
        path: P,
        name: &'static str,
    },
    Chmod {
        path: P,
        mode: u32,
    },
    Stat {
        path: P,
    },
    /// Open a descriptor into a slot (closing what was there).
    Open {
        slot: usize,
        path: P,
        mode: OpenMode,
    },
    FdWrite {
        slot: usize,
        off: u64,
        len: usize,
        seed: u8,
    },
    FdTruncate {
        slot: usize,
        size: u64,
    },
    FdRead {
        slot: usize,
        off: u64,
        len: usize,
    },
    FdStat {
        slot: usize,
    },
    Close {
        slot: usize,
    },
    /// Close all descriptors; unmount and mount again (artfs side only).
    Remount,
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Create { path, excl, mode } => {
                write!(
                    f,
                    "create({path:?}, {mode:#o}{})",
                    if *excl { ", EXCL" } else { "" }
                )
            }
            Op::Write {
                path,
                off,
                len,
                seed,
                append,
            } => {
                if *append {
                    write!(f, "append({path:?}, len={len}, seed={seed})")
                } else {
                    write!(f, "write({path:?}, off={off}, len={len}, seed={seed})")
                }
            }
            Op::Truncate { path, size } => write!(f, "truncate({path:?}, {size})"),
            Op::Rename { from, to, flags } => {
                let fl = match *flags {
                    0 => "",
                    libc::RENAME_NOREPLACE => ", NOREPLACE",
                    libc::RENAME_EXCHANGE => ", EXCHANGE",
                    _ => ", ?",
                };
                write!(f, "rename({from:?} -> {to:?}{fl})")
            }
            Op::Link { from, to } => write!(f, "link({from:?} -> {to:?})"),
            Op::Symlink { target, path } => {
                write!(f, "symlink({path:?} -> \"{}\")", target.escape_ascii())
            }
            Op::Unlink { path } => write!(f, "unlink({path:?})"),
            Op::Mkdir { path, mode } => write!(f, "mkdir({path:?}, {mode:#o})"),
            Op::Rmdir { path } => write!(f, "rmdir({path:?})"),
            Op::SetXattr {
                path,
                name,
                len,
                seed,
                flags,
            } => {
                let fl = match *flags {
                    0 => "",
                    libc::XATTR_CREATE => ", CREATE",
                    libc::XATTR_REPLACE => ", REPLACE",
                    _ => ", ?",
                };
                write!(f, "setxattr({path:?}, {name}, len={len}, seed={seed}{fl})")
            }
            Op::RemoveXattr { path, name } => write!(f, "removexattr({path:?}, {name})"),
            Op::Chmod { path, mode } => write!(f, "chmod({path:?}, {mode:#o})"),
            Op::Stat { path } => write!(f, "lstat({path:?})"),
            Op::Open { slot, path, mode } => write!(f, "fd{slot} = open({path:?}, {mode:?})"),
            Op::FdWrite {
                slot,
                off,
                len,
                seed,
            } => {
                write!(f, "pwrite(fd{slot}, off={off}, len={len}, seed={seed})")
            }
            Op::FdTruncate { slot, size } => write!(f, "ftruncate(fd{slot}, {size})"),
            Op::FdRead { slot, off, len } => write!(f, "pread(fd{slot}, off={off}, len={len})"),
            Op::FdStat { slot } => write!(f, "fstat(fd{slot})"),
            Op::Close { slot } => write!(f, "close(fd{slot})"),
            Op::Remount => write!(f, "remount"),
        }
    }
}

// ---------------------------------------------------------------------------
// Strategies

/// Paths the prelude creates (they may be gone or changed by then).
const KNOWN: [&[u8]; 10] = [
    b"a", b"b", b"c", b"\xffz", b"a/a", b"a/c", b"a/\xffz", b"c/\xffz", b"\xffz/b", b"a/c/b",
];

fn path() -> impl Strategy<Value = P> {
    prop_oneof![
        3 => any_path(),
        2 => prop::sample::select(KNOWN.to_vec()).prop_map(|p| P(p.to_vec())),
    ]
}

fn any_path() -> impl Strategy<Value = P> {
    let name = 0..NAMES.len();
    prop_oneof![
        6 => prop::collection::vec(name.clone(), 1..=1),
        4 => prop::collection::vec(name.clone(), 2..=2),
        1 => prop::collection::vec(name, 3..=3),
    ]
    .prop_map(|idx| {
        let parts: Vec<&[u8]> = idx.into_iter().map(|i| NAMES[i]).collect();
        P(parts.join(&b'/'))
    })
}

fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..6000,
        1 => prop::sample::select(vec![4095u64, 4096, 8191, 65_536, 65_537, 1 << 20, (1 << 20) + 4097]),
    ]
}

fn length() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 1usize..3000,
        1 => Just(0usize),
        1 => 3000usize..70_000,
    ]
}

fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => 0u64..6000,
        1 => prop::sample::select(vec![0u64, 4096, 65_536, 1 << 20, (2 << 20) + 3]),
    ]
}

fn mode() -> impl Strategy<Value = u32> {
    prop::sample::select(MODES.to_vec())
}

fn slot() -> impl Strategy<Value = usize> {
    0..SLOTS
}

/// Which optional op families a test function generates.
#[derive(Clone, Copy)]
struct Families {
    fds: bool,
    remount: bool,
}

fn op(fam: Families) -> impl Strategy<Value = Op> {
    let mut arms: Vec<(u32, BoxedStrategy<Op>)> = vec![
        (
            5,
            (path(), any::<bool>(), mode())
                .prop_map(|(path, excl, mode)| Op::Create { path, excl, mode })
                .boxed(),
        ),
        (
            6,
            (
                path(),
                offset(),
                length(),
                any::<u8>(),
                prop::bool::weighted(0.2),
            )
                .prop_map(|(path, off, len, seed, append)| Op::Write {
                    path,
                    off,
                    len,
                    seed,
                    append,
                })
                .boxed(),
        ),
        (
            3,
            (path(), size())
                .prop_map(|(path, size)| Op::Truncate { path, size })
                .boxed(),
        ),
        (
            5,
            (
                path(),
                path(),
                prop_oneof![
                    4 => Just(0u32),
                    1 => Just(libc::RENAME_NOREPLACE),
                    1 => Just(libc::RENAME_EXCHANGE),
                ],
            )
                .prop_map(|(from, to, flags)| Op::Rename { from, to, flags })
                .boxed(),
        ),
        (
            3,
            (path(), path())
                .prop_map(|(from, to)| Op::Link { from, to })
                .boxed(),
        ),
        (
            2,
            (prop::sample::select(TARGETS.to_vec()), path())
                .prop_map(|(target, path)| Op::Symlink { target, path })
                .boxed(),
        ),
        (3, path().prop_map(|path| Op::Unlink { path }).boxed()),
        (
            5,
            (path(), mode())
                .prop_map(|(path, mode)| Op::Mkdir { path, mode })
                .boxed(),
        ),
        (2, path().prop_map(|path| Op::Rmdir { path }).boxed()),
        (
            3,
            (
                path(),
                prop::sample::select(XNAMES.to_vec()),
                // ext4 (without ea_inode) keeps all xattrs of an inode in
                // one 4 KiB block: stay well below, artfs allows more.
                prop_oneof![4 => 0usize..64, 1 => 64usize..1000],
                any::<u8>(),
                prop_oneof![
                    3 => Just(0),
                    1 => Just(libc::XATTR_CREATE),
                    1 => Just(libc::XATTR_REPLACE),
                ],
            )
                .prop_map(|(path, name, len, seed, flags)| Op::SetXattr {
                    path,
                    name,
                    len,
                    seed,
                    flags,
                })
                .boxed(),
        ),
        (
            1,
            (path(), prop::sample::select(XNAMES.to_vec()))
                .prop_map(|(path, name)| Op::RemoveXattr { path, name })
                .boxed(),
        ),
        (
            2,
            (path(), mode())
                .prop_map(|(path, mode)| Op::Chmod { path, mode })
                .boxed(),
        ),
        (1, path().prop_map(|path| Op::Stat { path }).boxed()),
    ];
    if fam.fds {
        arms.extend([
            (
                6,
                (
                    slot(),
                    path(),
                    prop::sample::select(vec![
                        OpenMode::ReadOnly,
                        OpenMode::ReadWrite,
                        OpenMode::ReadWrite,
                        OpenMode::Append,
                        OpenMode::Trunc,
                    ]),
                )
                    .prop_map(|(slot, path, mode)| Op::Open { slot, path, mode })
                    .boxed(),
            ),
            (
                3,
                (slot(), offset(), length(), any::<u8>())
                    .prop_map(|(slot, off, len, seed)| Op::FdWrite {
                        slot,
                        off,
                        len,
                        seed,
                    })
                    .boxed(),
            ),
            (
                1,
                (slot(), size())
                    .prop_map(|(slot, size)| Op::FdTruncate { slot, size })
                    .boxed(),
            ),
            (
                1,
                (slot(), offset(), length())
                    .prop_map(|(slot, off, len)| Op::FdRead { slot, off, len })
                    .boxed(),
            ),
            (2, slot().prop_map(|slot| Op::FdStat { slot }).boxed()),
            (1, slot().prop_map(|slot| Op::Close { slot }).boxed()),
        ]);
    }
    if fam.remount {
        arms.push((1, Just(Op::Remount).boxed()));
    }
    Union::new_weighted(arms)
}

// ---------------------------------------------------------------------------
// Executing operations on one side

type OpResult = Result<String, i32>;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn check(rc: libc::c_long) -> Result<libc::c_long, i32> {
    if rc < 0 {
        Err(errno())
    } else {
        Ok(rc)
    }
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i as u8).wrapping_mul(31)) ^ ((i >> 8) as u8))
        .collect()
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn kind_of(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "file",
        libc::S_IFDIR => "dir",
        libc::S_IFLNK => "symlink",
        _ => "other",
    }
}

fn describe_stat(st: &libc::stat) -> String {
    let kind = kind_of(st.st_mode);
    let size = if kind == "dir" {
        String::new()
    } else {
        format!(" size={}", st.st_size)
    };
    format!(
        "{kind} perm={:#o} nlink={}{size}",
        st.st_mode & 0o7777,
        st.st_nlink
    )
}

fn pwrite_all(fd: i32, buf: &[u8], off: u64, append: bool) -> Result<usize, i32> {
    let mut done = 0;
    loop {
        let rest = &buf[done..];
        // SAFETY: valid buffer and descriptor owned by the side.
        let n = unsafe {
            if append {
                libc::write(fd, rest.as_ptr().cast(), rest.len())
            } else {
                libc::pwrite(
                    fd,
                    rest.as_ptr().cast(),
                    rest.len(),
                    (off + done as u64) as libc::off_t,
                )
            }
        };
        let n = check(n as libc::c_long)? as usize;
        done += n;
        if n == 0 || done >= buf.len() {
            return Ok(done);
        }
    }
}

/// One side of the comparison: a case root and its held descriptors.
struct Side {
    root: PathBuf,
    fds: [Option<i32>; SLOTS],
}

impl Side {
    fn new(root: PathBuf) -> Side {
        Side {
            root,
            fds: [None; SLOTS],
        }
    }

    fn c(&self, p: &P) -> CString {
        let mut v = self.root.as_os_str().as_bytes().to_vec();
        v.push(b'/');
        v.extend_from_slice(&p.0);
        CString::new(v).unwrap()
    }

    fn close_all(&mut self) {
        for fd in self.fds.iter_mut() {
            if let Some(fd) = fd.take() {
                // SAFETY: we own fd.
                unsafe { libc::close(fd) };
            }
        }
    }

    fn fd(&self, slot: usize) -> Result<i32, i32> {
        self.fds[slot].ok_or(libc::EBADF)
    }

    /// Apply `op`; `Remount` is handled by the caller after this returns.
    fn apply(&mut self, op: &Op) -> OpResult {
        // SAFETY (whole fn): plain syscalls on NUL-terminated paths and
        // descriptors this side owns, with correctly sized buffers.
        unsafe {
            match op {
                Op::Create { path, excl, mode } => {
                    let mut fl = libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC;
                    if *excl {
                        fl |= libc::O_EXCL;
                    }
                    let fd = check(libc::open(self.c(path).as_ptr(), fl, *mode) as _)? as i32;
                    check(libc::close(fd) as _)?;
                    Ok(String::new())
                }
                Op::Write {
                    path,
                    off,
                    len,
                    seed,
                    append,
                } => {
                    let mut fl = libc::O_WRONLY | libc::O_CLOEXEC;
                    if *append {
                        fl |= libc::O_APPEND;
                    }
                    let fd = check(libc::open(self.c(path).as_ptr(), fl) as _)? as i32;
                    let r = pwrite_all(fd, &data(*len, *seed), *off, *append);
                    let c = check(libc::close(fd) as _);
                    let n = r?;
                    c?;
                    Ok(format!("{n}"))
                }
                Op::Truncate { path, size } => {
                    check(libc::truncate(self.c(path).as_ptr(), *size as libc::off_t) as _)?;
                    Ok(String::new())
                }
                Op::Rename { from, to, flags } => {
                    check(libc::renameat2(
                        libc::AT_FDCWD,
                        self.c(from).as_ptr(),
                        libc::AT_FDCWD,
                        self.c(to).as_ptr(),
                        *flags,
                    ) as _)?;
                    Ok(String::new())
                }
                Op::Link { from, to } => {
                    check(libc::link(self.c(from).as_ptr(), self.c(to).as_ptr()) as _)?;
                    Ok(String::new())
                }
                Op::Symlink { target, path } => {
                    let t = CString::new(*target).unwrap();
                    check(libc::symlink(t.as_ptr(), self.c(path).as_ptr()) as _)?;
                    Ok(String::new())
                }
                Op::Unlink { path } => {
                    check(libc::unlink(self.c(path).as_ptr()) as _)?;
                    Ok(String::new())
                }
                Op::Mkdir { path, mode } => {
                    check(libc::mkdir(self.c(path).as_ptr(), *mode) as _)?;
                    Ok(String::new())
                }
                Op::Rmdir { path } => {
                    check(libc::rmdir(self.c(path).as_ptr()) as _)?;
                    Ok(String::new())
                }
                Op::SetXattr {
                    path,
                    name,
                    len,
                    seed,
                    flags,
                } => {
                    let n = CString::new(*name).unwrap();
                    let v = data(*len, *seed);
                    check(libc::setxattr(
                        self.c(path).as_ptr(),
                        n.as_ptr(),
                        v.as_ptr().cast(),
                        v.len(),
                        *flags,
                    ) as _)?;
                    Ok(String::new())
                }
                Op::RemoveXattr { path, name } => {
                    let n = CString::new(*name).unwrap();
                    check(libc::removexattr(self.c(path).as_ptr(), n.as_ptr()) as _)?;
                    Ok(String::new())
                }
                Op::Chmod { path, mode } => {
                    check(libc::chmod(self.c(path).as_ptr(), *mode) as _)?;
                    Ok(String::new())
                }
                Op::Stat { path } => {
                    let mut st: libc::stat = std::mem::zeroed();
                    check(libc::lstat(self.c(path).as_ptr(), &mut st) as _)?;
                    Ok(describe_stat(&st))
                }
                Op::Open { slot, path, mode } => {
                    if let Some(fd) = self.fds[*slot].take() {
                        libc::close(fd);
                    }
                    let fd = check(
                        libc::open(self.c(path).as_ptr(), mode.flags() | libc::O_CLOEXEC) as _,
                    )? as i32;
                    self.fds[*slot] = Some(fd);
                    Ok(String::new())
                }
                Op::FdWrite {
                    slot,
                    off,
                    len,
                    seed,
                } => {
                    let fd = self.fd(*slot)?;
                    let append = libc::fcntl(fd, libc::F_GETFL) & libc::O_APPEND != 0;
                    let n = pwrite_all(fd, &data(*len, *seed), *off, append)?;
                    Ok(format!("{n}"))
                }
                Op::FdTruncate { slot, size } => {
                    let fd = self.fd(*slot)?;
                    check(libc::ftruncate(fd, *size as libc::off_t) as _)?;
                    Ok(String::new())
                }
                Op::FdRead { slot, off, len } => {
                    let fd = self.fd(*slot)?;
                    let mut buf = vec![0u8; *len];
                    let mut done = 0;
                    while done < buf.len() {
                        let n = check(libc::pread(
                            fd,
                            buf[done..].as_mut_ptr().cast(),
                            buf.len() - done,
                            (*off + done as u64) as libc::off_t,
                        ) as _)? as usize;
                        if n == 0 {
                            break;
                        }
                        done += n;
                    }
                    buf.truncate(done);
                    Ok(format!("len={done} fnv={:016x}", fnv(&buf)))
                }
                Op::FdStat { slot } => {
                    let fd = self.fd(*slot)?;
                    let mut st: libc::stat = std::mem::zeroed();
                    check(libc::fstat(fd, &mut st) as _)?;
                    Ok(describe_stat(&st))
                }
                Op::Close { slot } => {
                    let fd = self.fds[*slot].take().ok_or(libc::EBADF)?;
                    check(libc::close(fd) as _)?;
                    Ok(String::new())
                }
                Op::Remount => {
                    self.close_all();
                    Ok(String::new())
                }
            }
        }
    }
}

impl Drop for Side {
    fn drop(&mut self) {
        self.close_all();
    }
}

// ---------------------------------------------------------------------------
// Observable state

#[derive(PartialEq, Eq)]
struct Node {
    kind: &'static str,
    perm: u32,
    uid: u32,
    gid: u32,
    nlink: u64,
    /// Not compared for directories (ext4 reports block multiples).
    size: Option<u64>,
    content: Option<Vec<u8>>,
    target: Option<Vec<u8>>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} perm={:#o} uid={} gid={} nlink={}",
            self.kind, self.perm, self.uid, self.gid, self.nlink
        )?;
        if let Some(s) = self.size {
            write!(f, " size={s}")?;
        }
        if let Some(c) = &self.content {
            write!(f, " fnv={:016x}", fnv(c))?;
        }
        if let Some(t) = &self.target {
            write!(f, " -> \"{}\"", t.escape_ascii())?;
        }
        for (n, v) in &self.xattrs {
            write!(
                f,
                " [{}: len={} fnv={:016x}]",
                n.escape_ascii(),
                v.len(),
                fnv(v)
            )?;
        }
        Ok(())
    }
}

type Tree = BTreeMap<Vec<u8>, Node>;

fn user_xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 65_536];
    // SAFETY: buffer of the given size, NUL-terminated path.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return vec![(b"<llistxattr error>".to_vec(), errno().to_string().into())];
    }
    buf.truncate(n as usize);
    let mut out = Vec::new();
    // artfs's own archive attributes (user.artstore.*) have no ext4
    // counterpart; tests/metadata.rs checks them.
    for name in buf
        .split(|b| *b == 0)
        .filter(|n| n.starts_with(b"user.") && !n.starts_with(b"user.artstore."))
    {
        let cn = CString::new(name).unwrap();
        let mut val = vec![0u8; 65_536];
        // SAFETY: as above.
        let n =
            unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), val.as_mut_ptr().cast(), val.len()) };
        if n < 0 {
            val = format!("<lgetxattr errno {}>", errno()).into_bytes();
        } else {
            val.truncate(n as usize);
        }
        out.push((name.to_vec(), val));
    }
    out.sort();
    out
}

fn node(path: &Path) -> std::io::Result<Node> {
    let m = std::fs::symlink_metadata(path)?;
    let kind = kind_of(m.mode());
    Ok(Node {
        kind,
        perm: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        nlink: m.nlink(),
        size: (kind != "dir").then_some(m.size()),
        content: if kind == "file" {
            Some(std::fs::read(path)?)
        } else {
            None
        },
        target: if kind == "symlink" {
            Some(std::fs::read_link(path)?.as_os_str().as_bytes().to_vec())
        } else {
            None
        },
        xattrs: user_xattrs(path),
    })
}

fn snapshot(root: &Path) -> std::io::Result<Tree> {
    let mut tree = Tree::new();
    let mut todo = vec![Vec::<u8>::new()];
    while let Some(rel) = todo.pop() {
        let abs = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(OsStr::from_bytes(&rel))
        };
        let n = node(&abs)?;
        if n.kind == "dir" {
            for e in std::fs::read_dir(&abs)? {
                let e = e?;
                let mut child = rel.clone();
                if !child.is_empty() {
                    child.push(b'/');
                }
                child.extend_from_slice(e.file_name().as_bytes());
                todo.push(child);
            }
        }
        tree.insert(rel, n);
    }
    Ok(tree)
}

fn show_path(p: &[u8]) -> String {
    if p.is_empty() {
        ".".into()
    } else {
        p.escape_ascii().to_string()
    }
}

/// A readable description of how two trees differ, or None.
fn diff(artfs: &Tree, ext4: &Tree) -> Option<String> {
    let mut out = Vec::new();
    for (p, e) in ext4 {
        match artfs.get(p) {
            None => out.push(format!(
                "  {}: missing on artfs (ext4: {e:?})",
                show_path(p)
            )),
            Some(a) if a != e => {
                let mut line = format!(
                    "  {}:\n      artfs: {a:?}\n      ext4:  {e:?}",
                    show_path(p)
                );
                if let (Some(ac), Some(ec)) = (&a.content, &e.content) {
                    if ac != ec {
                        let first = ac
                            .iter()
                            .zip(ec.iter())
                            .position(|(x, y)| x != y)
                            .unwrap_or(ac.len().min(ec.len()));
                        line += &format!(
                            "\n      content: first difference at byte {first} (lens {} vs {})",
                            ac.len(),
                            ec.len()
                        );
                    }
                }
                out.push(line);
            }
            _ => {}
        }
    }
    for (p, a) in artfs {
        if !ext4.contains_key(p) {
            out.push(format!("  {}: extra on artfs ({a:?})", show_path(p)));
        }
    }
    (!out.is_empty()).then(|| out.join("\n"))
}

fn show_result(r: &OpResult) -> String {
    match r {
        Ok(s) if s.is_empty() => "ok".into(),
        Ok(s) => format!("ok {s}"),
        Err(e) => format!("{} ({})", errno_name(*e), e),
    }
}

fn errno_name(e: i32) -> &'static str {
    match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EACCES => "EACCES",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EMLINK => "EMLINK",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENXIO => "ENXIO",
        libc::EBUSY => "EBUSY",
        libc::ENOTCONN => "ENOTCONN",
        _ => "errno",
    }
}

// ---------------------------------------------------------------------------
// The differential runner

struct World {
    mount: common::Mount,
    /// Parent of the reference case roots (on the local filesystem).
    plain: tempfile::TempDir,
    next_case: u32,
    /// Per op kind: (ok, failed) counts, printed with MODEL_STATS=1.
    stats: BTreeMap<String, (u32, u32)>,
}

/// Whether the daemon process is still running (not exited or a zombie).
fn daemon_alive(m: &common::Mount) -> bool {
    let Some(pid) = m.pid() else { return false };
    let running = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    };
    running
        && !matches!(
            std::fs::metadata(&m.mnt).map_err(|e| e.raw_os_error()),
            Err(Some(libc::ENOTCONN))
        )
}

/// The tree every case starts from (applied to both sides, not shrunk), so
/// that generated paths often name something that exists.
fn prelude() -> Vec<Op> {
    let p = |s: &[u8]| P(s.to_vec());
    vec![
        Op::Mkdir {
            path: p(b"a"),
            mode: 0o755,
        },
        Op::Mkdir {
            path: p(b"c"),
            mode: 0o755,
        },
        Op::Mkdir {
            path: p(b"\xffz"),
            mode: 0o755,
        },
        Op::Mkdir {
            path: p(b"a/c"),
            mode: 0o755,
        },
        Op::Create {
            path: p(b"b"),
            excl: true,
            mode: 0o644,
        },
        Op::Write {
            path: p(b"b"),
            off: 0,
            len: 100,
            seed: 1,
            append: false,
        },
        Op::Create {
            path: p(b"a/a"),
            excl: true,
            mode: 0o600,
        },
        Op::Create {
            path: p(b"c/\xffz"),
            excl: true,
            mode: 0o644,
        },
        Op::Write {
            path: p(b"c/\xffz"),
            off: 0,
            len: 5000,
            seed: 2,
            append: false,
        },
        Op::Symlink {
            target: b"../b",
            path: p(b"a/\xffz"),
        },
        Op::Link {
            from: p(b"b"),
            to: p(b"\xffz/b"),
        },
    ]
}

/// Poll for a while whether the daemon goes away.
fn wait_for_death(m: &common::Mount) -> bool {
    for _ in 0..20 {
        if !daemon_alive(m) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}

/// `run_case`, turning a panic (e.g. from the harness) into a failure and
/// starting a fresh mount for the cases that follow.
fn run_case_guarded(world: &mut World, ops: &[Op]) -> Result<(), TestCaseError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case(world, ops))) {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            world.mount = common::Mount::new();
            Err(TestCaseError::fail(format!(
                "panic while running the case: {msg}"
            )))
        }
    }
}

fn run_case(world: &mut World, ops: &[Op]) -> Result<(), TestCaseError> {
    world.next_case += 1;
    let case = format!("case-{}", world.next_case);
    let e_root = world.plain.path().join(&case);
    if !daemon_alive(&world.mount) {
        world.mount = common::Mount::new();
    }
    let a_root = world.mount.mnt.join(&case);
    std::fs::create_dir(&a_root).map_err(|e| TestCaseError::fail(format!("mkdir artfs: {e}")))?;
    std::fs::create_dir(&e_root).map_err(|e| TestCaseError::fail(format!("mkdir ext4: {e}")))?;
    let mut a = Side::new(a_root);
    let mut e = Side::new(e_root);
    let mut trace = Vec::new();
    let fail = |trace: &[String], what: String| {
        TestCaseError::fail(format!(
            "\n--- ops (negative: the fixed prelude; one result if both sides agree) ---\n{}\n--- divergence ---\n{what}\n",
            trace.join("\n")
        ))
    };
    let prelude = prelude();
    for (i, op) in prelude.iter().chain(ops).enumerate() {
        // Ops are numbered from the start of the prelude.
        let i = i as isize - prelude.len() as isize;
        let ra = a.apply(op);
        let re = e.apply(op);
        // A panicking daemon answers EIO and exits a moment later.
        let suspicious = matches!(ra, Err(libc::EIO | libc::ENOTCONN));
        let mut died = !daemon_alive(&world.mount) || (suspicious && wait_for_death(&world.mount));
        if !died && matches!(op, Op::Remount) {
            // The harness panics if the daemon does not exit cleanly.
            died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| world.mount.remount()))
                .is_err();
        }
        if died {
            trace.push(format!(
                "{i:3}: {op:?} => artfs: {} | ext4: {}   <-- artfs daemon died",
                show_result(&ra),
                show_result(&re)
            ));
            drop(a);
            world.mount = common::Mount::new();
            return Err(fail(
                &trace,
                format!(
                    "the artfs daemon crashed (or did not unmount cleanly) during op {i} ({op:?})"
                ),
            ));
        }
        let line = if ra == re {
            format!("{i:3}: {op:?} => {}", show_result(&ra))
        } else {
            format!(
                "{i:3}: {op:?} => artfs: {} | ext4: {}   <-- results differ",
                show_result(&ra),
                show_result(&re)
            )
        };
        trace.push(line);
        let kind = format!("{op:?}");
        let kind = kind.split(['(', ' ']).next().unwrap_or("").to_string();
        let st = world.stats.entry(kind).or_default();
        match (i >= 0, ra.is_ok()) {
            (false, _) => {}
            (true, true) => st.0 += 1,
            (true, false) => st.1 += 1,
        }
        if ra != re {
            return Err(fail(&trace, format!("op {i} ({op:?}) results differ")));
        }
        let ta = snapshot(&a.root).map_err(|err| fail(&trace, format!("artfs snapshot: {err}")))?;
        let te = snapshot(&e.root).map_err(|err| fail(&trace, format!("ext4 snapshot: {err}")))?;
        if let Some(d) = diff(&ta, &te) {
            return Err(fail(&trace, format!("state after op {i} ({op:?}):\n{d}")));
        }
    }
    a.close_all();
    e.close_all();
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

fn run_model(fam: Families) {
    // SAFETY: umask only affects this test process; both sides see it.
    unsafe { libc::umask(0o022) };
    let world = RefCell::new(World {
        mount: common::Mount::new(),
        plain: tempfile::Builder::new()
            .prefix("artfs-model-ext4-")
            .tempdir()
            .expect("tempdir"),
        next_case: 0,
        stats: BTreeMap::new(),
    });
    let seed = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    let config = Config {
        cases: cases(),
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 1024,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let strategy = prop::collection::vec(op(fam), 1..=MAX_OPS);
    let runs = Cell::new(0u32);
    let result = runner.run(&strategy, |ops| {
        runs.set(runs.get() + 1);
        run_case_guarded(&mut world.borrow_mut(), &ops)
    });
    if std::env::var_os("MODEL_STATS").is_some() {
        for (k, (ok, err)) in &world.borrow().stats {
            eprintln!("{k:>12}: {ok:6} ok {err:6} failed");
        }
    }
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, ops)) => {
            let listing: Vec<String> = ops.iter().map(|o| format!("    {o:?},")).collect();
            let world = &mut world.borrow_mut();
            let again = (0..REPLAYS)
                .filter(|_| run_case_guarded(world, &ops).is_err())
                .count();
            panic!(
                "artfs diverged from ext4 (after {} runs incl. shrinking; \
                 rerun with PROPTEST_RNG_SEED={seed})\n\
                 minimal sequence (replayed {REPLAYS} more times: failed {again}):\n{}\n{}",
                runs.get(),
                listing.join("\n"),
                reason
            );
        }
        Err(TestError::Abort(why)) => panic!("proptest aborted: {why}"),
    }
}

/// Namespace, data, attribute and xattr ops through paths only.
#[test]
fn model_paths() {
    common::engine::every_engine(|| {
        run_model(Families {
            fds: false,
            remount: false,
        });
    });
}

/// Everything, including held descriptors (writes through unlinked or
/// renamed files) and remounts.
#[test]
fn model_full() {
    common::engine::every_engine(|| {
        run_model(Families {
            fds: true,
            remount: true,
        });
    });
}
