//! The kernel's mount table as this process sees it
//! (/proc/self/mountinfo): which mount is where, of what type, from what
//! source. Used to tell a live artfs mount from a dead one and to name the
//! store a mount serves.

use std::path::PathBuf;

/// One line of /proc/self/mountinfo.
#[derive(Clone, Debug)]
pub struct MountEntry {
    pub mountpoint: PathBuf,
    /// `fuse.artfs` for artfs mounts.
    pub fstype: String,
    /// `artfs:BACKING` for artfs mounts.
    pub source: String,
}

/// Every mount, in table order (a later entry at the same mount point is
/// stacked on the earlier ones).
pub fn mounts() -> Vec<MountEntry> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines().filter_map(parse).collect()
}

/// The topmost mount at `path` (compared as given: pass a canonical path).
pub fn mount_at(path: &std::path::Path) -> Option<MountEntry> {
    mounts().into_iter().rfind(|m| m.mountpoint == path)
}

fn parse(line: &str) -> Option<MountEntry> {
    let mut fields = line.split(' ');
    let mountpoint = fields.nth(4)?;
    // Optional fields end with a lone "-".
    let mut rest = fields.skip_while(|f| *f != "-").skip(1);
    let fstype = rest.next()?;
    let source = rest.next()?;
    Some(MountEntry {
        mountpoint: PathBuf::from(unescape(mountpoint)),
        fstype: unescape(fstype),
        source: unescape(source),
    })
}

/// Undo the kernel's octal escapes (`\040` for a space, `\134` for `\`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_fuse_line_with_escapes() {
        let l = "57 28 0:50 / /tmp/a\\040b rw,nosuid,nodev,relatime shared:30 - fuse.artfs \
                 artfs:/tmp/back\\040ing rw,user_id=0,group_id=0";
        let m = parse(l).unwrap();
        assert_eq!(m.mountpoint, PathBuf::from("/tmp/a b"));
        assert_eq!(m.fstype, "fuse.artfs");
        assert_eq!(m.source, "artfs:/tmp/back ing");
    }
}
