//! POSIX ACLs, as ext4 keeps them: the access ACL of an inode and the
//! default ACL of a directory are extended attributes,
//! `system.posix_acl_access` and `system.posix_acl_default`, stored in the
//! xattr table in the kernel's `posix_acl_xattr` format (a little-endian
//! header `u32` version 2, then entries `{u16 tag, u16 perm, u32 id}`), so
//! they ride in the sidecar and come back with `artfs rebuild`.
//!
//! Every ACL rule is written here once, after the kernel's
//! `fs/posix_acl.c`: the format and its validity (`posix_acl_from_xattr`,
//! `posix_acl_valid`), an ACL equivalent to a mode (`posix_acl_equiv_mode`,
//! `posix_acl_update_mode`: setting one changes only the mode), chmod
//! (`posix_acl_chmod`), what a new inode inherits from its directory's
//! default ACL (`posix_acl_create`) and the permission check
//! (`posix_acl_permission`). The FUSE door's permission checks are the
//! kernel's (it reads the ACL with getxattr); `core/access.rs` applies
//! [`Acl::permits`] for the HTTP door. Callers: `xattr.rs` (set, remove),
//! `namespace.rs` (create, chmod), `publish.rs` (uploads), `access.rs`.

use crate::meta::XattrList;
use crate::types::error::{Error, Result};
use crate::types::Caller;

/// The access ACL's attribute name.
pub const ACCESS: &[u8] = b"system.posix_acl_access";
/// The default ACL's attribute name (directories only).
pub const DEFAULT: &[u8] = b"system.posix_acl_default";

const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
/// The id of entries that name no one (the kernel writes it so).
const UNDEFINED_ID: u32 = u32::MAX;

/// Whether `name` is one of the two ACL attributes.
pub fn is_acl_name(name: &[u8]) -> bool {
    name == ACCESS || name == DEFAULT
}

/// One ACL entry: a tag, its permission bits (rwx as 4, 2, 1) and the uid
/// or gid of a named user or group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub tag: u16,
    pub perm: u16,
    pub id: u32,
}

/// A valid ACL (at least the owner, owning group and other entries, in the
/// kernel's order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl(Vec<Entry>);

fn einval(what: &'static str) -> Error {
    Error::posix(libc::EINVAL, what)
}

impl Acl {
    /// Decode and check an attribute value as the kernel does before a
    /// filesystem sees it: `None` for a header with no entries (setting it
    /// removes the ACL); EOPNOTSUPP for another version; EINVAL for a
    /// malformed value or an invalid ACL.
    pub fn parse(value: &[u8]) -> Result<Option<Acl>> {
        if value.len() < 4 {
            return Err(einval("POSIX ACL: shorter than its header"));
        }
        let version = u32::from_le_bytes(value[..4].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(Error::posix(
                libc::EOPNOTSUPP,
                "POSIX ACL: unknown format version",
            ));
        }
        let body = &value[4..];
        if !body.len().is_multiple_of(8) {
            return Err(einval("POSIX ACL: not a whole number of entries"));
        }
        if body.is_empty() {
            return Ok(None);
        }
        let mut entries = Vec::with_capacity(body.len() / 8);
        for e in body.chunks_exact(8) {
            let tag = u16::from_le_bytes([e[0], e[1]]);
            let perm = u16::from_le_bytes([e[2], e[3]]);
            let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            let id = match tag {
                USER_OBJ | GROUP_OBJ | MASK | OTHER => UNDEFINED_ID,
                USER | GROUP if id != UNDEFINED_ID => id,
                USER | GROUP => return Err(einval("POSIX ACL: a named entry without an id")),
                _ => return Err(einval("POSIX ACL: unknown entry tag")),
            };
            entries.push(Entry { tag, perm, id });
        }
        let acl = Acl(entries);
        acl.check()?;
        Ok(Some(acl))
    }

    /// `posix_acl_valid`: permission bits rwx only; one owner entry first,
    /// named users, one owning group entry, named groups, a mask (required
    /// when anything is named), one other entry last.
    fn check(&self) -> Result<()> {
        // The next tags allowed, as the kernel's state machine.
        #[derive(PartialEq)]
        enum State {
            UserObj,
            User,
            Group,
            Other,
            Done,
        }
        let mut state = State::UserObj;
        let mut needs_mask = false;
        for e in &self.0 {
            if e.perm & !7 != 0 {
                return Err(einval("POSIX ACL: permission bits other than rwx"));
            }
            state = match (e.tag, state) {
                (USER_OBJ, State::UserObj) => State::User,
                (USER, State::User) => {
                    needs_mask = true;
                    State::User
                }
                (GROUP_OBJ, State::User) => State::Group,
                (GROUP, State::Group) => {
                    needs_mask = true;
                    State::Group
                }
                (MASK, State::Group) => State::Other,
                (OTHER, State::Other) => State::Done,
                (OTHER, State::Group) if !needs_mask => State::Done,
                _ => {
                    return Err(einval(
                        "POSIX ACL: entries missing, repeated or out of order",
                    ))
                }
            };
        }
        if state == State::Done {
            Ok(())
        } else {
            Err(einval("POSIX ACL: entries missing"))
        }
    }

    /// The attribute value (ids of unnamed entries written as the kernel
    /// writes them).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 8 * self.0.len());
        out.extend_from_slice(&VERSION.to_le_bytes());
        for e in &self.0 {
            out.extend_from_slice(&e.tag.to_le_bytes());
            out.extend_from_slice(&e.perm.to_le_bytes());
            out.extend_from_slice(&e.id.to_le_bytes());
        }
        out
    }

    pub fn entries(&self) -> &[Entry] {
        &self.0
    }

    /// `posix_acl_equiv_mode`: the rwx bits of the mode the ACL gives
    /// (the group bits are the mask's when there is one), and whether the
    /// ACL says no more than those bits (then it need not be stored).
    pub fn mode_bits(&self) -> (u32, bool) {
        let mut mode = 0u32;
        let mut equiv = true;
        for e in &self.0 {
            let p = u32::from(e.perm & 7);
            match e.tag {
                USER_OBJ => mode |= p << 6,
                GROUP_OBJ => mode |= p << 3,
                OTHER => mode |= p,
                MASK => {
                    mode = (mode & !0o070) | (p << 3);
                    equiv = false;
                }
                _ => equiv = false,
            }
        }
        (mode, equiv)
    }

    /// `posix_acl_chmod`: the owner, mask (else owning group) and other
    /// entries take the new mode's bits; named entries stay.
    pub fn chmod(&mut self, perm: u32) {
        let has_mask = self.0.iter().any(|e| e.tag == MASK);
        for e in &mut self.0 {
            match e.tag {
                USER_OBJ => e.perm = ((perm >> 6) & 7) as u16,
                MASK => e.perm = ((perm >> 3) & 7) as u16,
                GROUP_OBJ if !has_mask => e.perm = ((perm >> 3) & 7) as u16,
                OTHER => e.perm = (perm & 7) as u16,
                _ => {}
            }
        }
    }

    /// `posix_acl_create_masq`: a default ACL made the access ACL of a new
    /// inode created with `perm`: each class keeps only what both allow,
    /// and `perm`'s rwx bits become the result's. Whether the result says
    /// more than the mode (so must be stored).
    fn create_masq(&mut self, perm: &mut u32) -> bool {
        let mut mode = *perm & 0o777;
        let mut equiv = true;
        for e in &mut self.0 {
            match e.tag {
                USER_OBJ => {
                    e.perm &= ((mode >> 6) & 7) as u16;
                    mode &= (u32::from(e.perm) << 6) | !0o700;
                }
                OTHER => {
                    e.perm &= (mode & 7) as u16;
                    mode &= u32::from(e.perm) | !0o007;
                }
                MASK | USER | GROUP => equiv = false,
                _ => {}
            }
        }
        let group_tag = if self.0.iter().any(|e| e.tag == MASK) {
            MASK
        } else {
            GROUP_OBJ
        };
        if let Some(e) = self.0.iter_mut().find(|e| e.tag == group_tag) {
            e.perm &= ((mode >> 3) & 7) as u16;
            mode &= (u32::from(e.perm) << 3) | !0o070;
        }
        *perm = (*perm & !0o777) | (mode & 0o777);
        !equiv
    }

    /// `posix_acl_permission`: whether the ACL grants every bit of `want`
    /// (rwx as 4, 2, 1) to `caller` on an inode owned by `uid`:`gid`. The
    /// owner's entry for the owner; a named user's entry under the mask;
    /// else the owning group and named groups the caller is in, under the
    /// mask (any one granting all of `want`; denied if some matched but
    /// none granted); else other.
    pub fn permits(&self, caller: &Caller, uid: u32, gid: u32, want: u32) -> bool {
        let want = (want & 7) as u16;
        let mask = self.0.iter().find(|e| e.tag == MASK).map_or(7, |e| e.perm);
        let mut found = false;
        for e in &self.0 {
            match e.tag {
                USER_OBJ if caller.uid == uid => return e.perm & want == want,
                USER if caller.uid == e.id => return e.perm & mask & want == want,
                GROUP_OBJ | GROUP => {
                    let g = if e.tag == GROUP_OBJ { gid } else { e.id };
                    if caller.in_group(g) {
                        found = true;
                        if e.perm & want == want {
                            return e.perm & mask & want == want;
                        }
                    }
                }
                OTHER => return !found && e.perm & want == want,
                _ => {}
            }
        }
        false
    }
}

/// The stored access ACL in `xattrs`, if any (an unreadable one counts
/// as an ACL that grants nothing).
pub fn access_acl(xattrs: &[(Vec<u8>, Vec<u8>)]) -> Option<Acl> {
    let (_, v) = xattrs.iter().find(|(n, _)| n == ACCESS)?;
    Some(
        Acl::parse(v)
            .ok()
            .flatten()
            .unwrap_or_else(|| Acl(Vec::new())),
    )
}

/// The value to store for an ACL attribute set by a caller: checked
/// ([`Acl::parse`]) and re-encoded; a header alone stays a header (the
/// ACL's removal).
pub fn normalise(value: &[u8]) -> Result<Vec<u8>> {
    Ok(match Acl::parse(value)? {
        Some(acl) => acl.to_bytes(),
        None => VERSION.to_le_bytes().to_vec(),
    })
}

/// `posix_acl_update_mode`: the permission bits of a file whose access
/// ACL `caller` sets to `acl` (its rwx bits the ACL's; setgid dropped
/// unless the caller is root or in the file's group `gid`), and whether
/// the ACL must be stored (it says more than the mode).
pub fn mode_for(acl: &Acl, perm: u32, gid: u32, caller: &Caller) -> (u32, bool) {
    let (bits, equiv) = acl.mode_bits();
    let mut perm = (perm & !0o777) | bits;
    if !caller.is_root() && !caller.in_group(gid) {
        perm &= !libc::S_ISGID;
    }
    (perm, !equiv)
}

/// `posix_acl_chmod`: `xattrs` with the access ACL following the new
/// permission bits, or `None` when there is no access ACL to change.
pub fn chmod(xattrs: &[(Vec<u8>, Vec<u8>)], perm: u32) -> Option<XattrList> {
    let i = xattrs.iter().position(|(n, _)| n == ACCESS)?;
    let mut acl = Acl::parse(&xattrs[i].1).ok().flatten()?;
    acl.chmod(perm);
    let mut out = xattrs.to_vec();
    out[i].1 = acl.to_bytes();
    Some(out)
}

/// `posix_acl_create`: the permission bits of a new inode made with
/// `perm` (no file type bits) in a directory whose attributes are
/// `parent`, and the ACL attributes it gets. With a default ACL there,
/// the umask is not applied: the new inode's access ACL is the default
/// ACL masked by `perm` (stored only when it says more than the mode), and
/// a directory inherits the default ACL itself; without one, the umask
/// applies. Symbolic links have neither.
pub fn inherit(
    parent: &[(Vec<u8>, Vec<u8>)],
    is_dir: bool,
    perm: u32,
    umask: u32,
) -> (u32, XattrList) {
    let default = parent
        .iter()
        .find(|(n, _)| n == DEFAULT)
        .and_then(|(_, v)| Acl::parse(v).ok().flatten());
    let Some(default) = default else {
        return (perm & !umask, Vec::new());
    };
    let mut perm = perm;
    let mut access = default.clone();
    let mut out = Vec::new();
    if access.create_masq(&mut perm) {
        out.push((ACCESS.to_vec(), access.to_bytes()));
    }
    if is_dir {
        out.push((DEFAULT.to_vec(), default.to_bytes()));
    }
    (perm, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut v = VERSION.to_le_bytes().to_vec();
        for &(tag, perm, id) in entries {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    }

    fn user(uid: u32, gid: u32) -> Caller {
        Caller {
            uid,
            gid,
            pid: 0,
            subject: None,
            groups: None,
            grants: None,
        }
    }

    const U: u32 = UNDEFINED_ID;

    #[test]
    fn parse_checks_as_the_kernel() {
        let ok = acl(&[
            (USER_OBJ, 6, U),
            (USER, 6, 1000),
            (GROUP_OBJ, 4, U),
            (MASK, 6, U),
            (OTHER, 4, U),
        ]);
        let a = Acl::parse(&ok).unwrap().unwrap();
        assert_eq!(a.to_bytes(), ok);
        assert_eq!(Acl::parse(&acl(&[])).unwrap(), None);
        let bad = [
            // no mask with a named user
            acl(&[
                (USER_OBJ, 6, U),
                (USER, 6, 1),
                (GROUP_OBJ, 4, U),
                (OTHER, 4, U),
            ]),
            // out of order
            acl(&[(GROUP_OBJ, 4, U), (USER_OBJ, 6, U), (OTHER, 4, U)]),
            // missing other
            acl(&[(USER_OBJ, 6, U), (GROUP_OBJ, 4, U)]),
            // bits beyond rwx
            acl(&[(USER_OBJ, 8, U), (GROUP_OBJ, 4, U), (OTHER, 4, U)]),
            // unknown tag
            acl(&[
                (USER_OBJ, 6, U),
                (0x40, 4, U),
                (GROUP_OBJ, 4, U),
                (OTHER, 4, U),
            ]),
            // a named user without an id
            acl(&[
                (USER_OBJ, 6, U),
                (USER, 6, U),
                (GROUP_OBJ, 4, U),
                (MASK, 6, U),
                (OTHER, 4, U),
            ]),
        ];
        for b in bad {
            assert_eq!(Acl::parse(&b).unwrap_err().errno(), libc::EINVAL, "{b:?}");
        }
        assert_eq!(Acl::parse(b"ab").unwrap_err().errno(), libc::EINVAL);
        assert_eq!(Acl::parse(&ok[..9]).unwrap_err().errno(), libc::EINVAL);
        let mut v1 = ok.clone();
        v1[0] = 1;
        assert_eq!(Acl::parse(&v1).unwrap_err().errno(), libc::EOPNOTSUPP);
    }

    #[test]
    fn equivalence_chmod_and_inheritance() {
        let min = Acl::parse(&acl(&[(USER_OBJ, 7, U), (GROUP_OBJ, 5, U), (OTHER, 0, U)]))
            .unwrap()
            .unwrap();
        assert_eq!(min.mode_bits(), (0o750, true));
        let mut named = Acl::parse(&acl(&[
            (USER_OBJ, 6, U),
            (USER, 7, 1000),
            (GROUP_OBJ, 4, U),
            (MASK, 7, U),
            (OTHER, 0, U),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(named.mode_bits(), (0o670, false));
        named.chmod(0o640);
        assert_eq!(named.mode_bits(), (0o640, false));
        assert_eq!(named.entries()[1].perm, 7, "named entries stay");
        // Inheritance: umask ignored, mode masks the default ACL.
        let parent = vec![(DEFAULT.to_vec(), named.to_bytes())];
        let (perm, got) = inherit(&parent, true, 0o777, 0o077);
        assert_eq!(perm, 0o640);
        assert_eq!(got.len(), 2);
        let (perm, got) = inherit(&parent, false, 0o600, 0o077);
        assert_eq!(perm, 0o600);
        let a = Acl::parse(&got[0].1).unwrap().unwrap();
        assert_eq!(a.mode_bits(), (0o600, false));
        // Without a default ACL the umask applies.
        assert_eq!(inherit(&[], false, 0o666, 0o022), (0o644, vec![]));
    }

    #[test]
    fn permission_as_posix_acl_permission() {
        let a = Acl::parse(&acl(&[
            (USER_OBJ, 6, U),
            (USER, 6, 1000),
            (USER, 7, 1001),
            (GROUP_OBJ, 4, U),
            (GROUP, 2, 50),
            (MASK, 4, U),
            (OTHER, 0, U),
        ]))
        .unwrap()
        .unwrap();
        // the owner: own entry, no mask
        assert!(a.permits(&user(1, 1), 1, 9, 6));
        // named user under the mask
        assert!(a.permits(&user(1000, 2), 1, 9, 4));
        assert!(!a.permits(&user(1000, 2), 1, 9, 2));
        // a group that grants what is wanted but the mask does not
        assert!(!a.permits(&user(7, 50), 1, 9, 2));
        // in a group that does not grant: not other
        assert!(!a.permits(&user(7, 9), 1, 9, 2));
        assert!(a.permits(&user(7, 9), 1, 9, 4));
        // other
        assert!(!a.permits(&user(7, 7), 1, 9, 4));
    }
}
