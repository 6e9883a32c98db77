//! The inode-flag ioctls as the kernel sends them to a FUSE daemon
//! (linux/fs.h): their numbers, and the two wire shapes of the flags (an
//! `unsigned int` of `FS_*_FL` bits, or a `struct fsxattr` whose
//! `fsx_xflags` carries `FS_XFLAG_*` bits). The rules are the core's
//! (`core::flags`).

use crate::types::error::{Error, Result};
use crate::types::flags::{APPEND, IMMUTABLE, NOATIME, NODUMP};

pub const GETFLAGS: u32 = 0x8008_6601;
pub const SETFLAGS: u32 = 0x4008_6602;
pub const FSGETXATTR: u32 = 0x801c_581f;
pub const FSSETXATTR: u32 = 0x401c_5820;

/// `FS_XFLAG_*` for each kept `FS_*_FL` flag.
const XFLAGS: [(u32, u32); 4] = [
    (IMMUTABLE, 0x0000_0008),
    (APPEND, 0x0000_0010),
    (NOATIME, 0x0000_0040),
    (NODUMP, 0x0000_0080),
];

/// A `struct fsxattr` (28 bytes) reporting `flags`.
pub fn fsxattr(flags: u32) -> Vec<u8> {
    let x: u32 = XFLAGS
        .iter()
        .filter(|(f, _)| flags & f != 0)
        .map(|(_, x)| x)
        .sum();
    let mut out = vec![0u8; 28];
    out[..4].copy_from_slice(&x.to_ne_bytes());
    out
}

/// The flags of a SETFLAGS argument.
pub fn flags_in(data: &[u8]) -> Result<u32> {
    let b: [u8; 4] = data
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::posix(libc::EINVAL, "short FS_IOC_SETFLAGS argument"))?;
    Ok(u32::from_ne_bytes(b))
}

/// The flags of an FSSETXATTR argument; xflags artfs does not keep (and
/// a project id, extent size hints) are EOPNOTSUPP.
pub fn xflags_in(data: &[u8]) -> Result<u32> {
    if data.len() < 20 {
        return Err(Error::posix(
            libc::EINVAL,
            "short FS_IOC_FSSETXATTR argument",
        ));
    }
    let word = |i: usize| u32::from_ne_bytes(data[i * 4..i * 4 + 4].try_into().unwrap());
    let (mut xflags, extsize, projid, cowextsize) = (word(0), word(1), word(3), word(4));
    if extsize != 0 || projid != 0 || cowextsize != 0 {
        return Err(Error::posix(
            libc::EOPNOTSUPP,
            "artfs keeps no project ids or extent size hints",
        ));
    }
    let mut flags = 0;
    for (f, x) in XFLAGS {
        if xflags & x != 0 {
            flags |= f;
            xflags &= !x;
        }
    }
    if xflags != 0 {
        return Err(Error::posix_msg(
            libc::EOPNOTSUPP,
            format!("artfs does not keep the xflags {xflags:#x}"),
        ));
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xflags_round_trip() {
        for f in [
            0,
            IMMUTABLE,
            APPEND | NODUMP,
            IMMUTABLE | APPEND | NOATIME | NODUMP,
        ] {
            assert_eq!(xflags_in(&fsxattr(f)).unwrap(), f);
        }
        let mut odd = fsxattr(0);
        odd[0] = 0x01; // FS_XFLAG_REALTIME
        assert_eq!(xflags_in(&odd).unwrap_err().errno(), libc::EOPNOTSUPP);
        assert_eq!(flags_in(&[1, 2]).unwrap_err().errno(), libc::EINVAL);
    }
}
