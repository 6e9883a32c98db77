//! What the kernel caches, as far as a follower must know it: every name
//! it was given (an entry reply) and not yet forgotten. A replica that
//! lost track of the writer's changes (the feed rows it missed were
//! pruned) cannot name what changed, and the kernel has no "drop
//! everything" request: it drops each of these names and inodes instead.
//! Only follower mounts keep this (a writer's kernel cache only ever
//! holds what the writer itself told it).

use std::collections::HashMap;

use parking_lot::Mutex;

/// Names per inode the kernel holds, with its lookup count.
#[derive(Default)]
pub struct KnownNames {
    inner: Mutex<HashMap<u64, Known>>,
}

#[derive(Default)]
struct Known {
    lookups: u64,
    names: Vec<(u64, Vec<u8>)>,
}

impl KnownNames {
    /// The kernel took a reference to `ino` under `parent`/`name`.
    pub fn note(&self, parent: u64, name: &[u8], ino: u64) {
        let mut m = self.inner.lock();
        let k = m.entry(ino).or_default();
        k.lookups += 1;
        if !k.names.iter().any(|(p, n)| *p == parent && n == name) {
            k.names.push((parent, name.to_vec()));
        }
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        let mut m = self.inner.lock();
        if let Some(k) = m.get_mut(&ino) {
            k.lookups = k.lookups.saturating_sub(n);
            if k.lookups == 0 {
                m.remove(&ino);
            }
        }
    }

    /// Every name and inode the kernel may hold now.
    pub fn all(&self) -> (Vec<(u64, Vec<u8>)>, Vec<u64>) {
        let m = self.inner.lock();
        let names = m.values().flat_map(|k| k.names.iter().cloned()).collect();
        (names, m.keys().copied().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_live_until_forgotten() {
        let k = KnownNames::default();
        k.note(1, b"a", 5);
        k.note(1, b"a", 5);
        k.note(2, b"b", 5);
        k.note(1, b"c", 6);
        let (mut names, mut inos) = k.all();
        names.sort();
        inos.sort();
        assert_eq!(
            names,
            vec![(1, b"a".to_vec()), (1, b"c".to_vec()), (2, b"b".to_vec())]
        );
        assert_eq!(inos, vec![5, 6]);
        k.forget(5, 2);
        assert_eq!(k.all().1.len(), 2, "one reference to 5 is left");
        k.forget(5, 1);
        k.forget(6, 1);
        assert_eq!(k.all(), (vec![], vec![]));
    }
}
