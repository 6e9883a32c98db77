//! The kill -9 loop (issue 3): a workload of creates, writes with periodic
//! fsync checkpoints, renames and unlinks runs while the daemon is killed
//! at a random moment; after each remount fsck is clean, every file that
//! exists holds only bytes that were written to it (never another file's),
//! and every byte covered by a completed fsync is intact.
//!
//! `ARTFS_CRASH_ROUNDS` sets the number of rounds (default 50);
//! scripts/crash-soak.sh runs many more.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use common::Mount;

/// The content file `id` is written with: recognisable at every offset.
fn content(id: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut x = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// What the test knows about one file.
#[derive(Clone, Debug)]
struct Known {
    len: usize,
    /// A completed fsync covered all `len` bytes and the file's name.
    synced: bool,
    /// Names it may have now (renames after the last sync may be lost).
    names: Vec<String>,
    /// An unlink was issued: it may be gone.
    maybe_gone: bool,
}

type Model = Arc<Mutex<BTreeMap<u64, Known>>>;

fn name_id(name: &str) -> Option<u64> {
    name.split('-').nth(1)?.parse().ok()
}

/// Run operations until the mount dies. Every operation's intent is put
/// in the model before it is issued, and its completion after.
fn workload(dir: &Path, model: Model, next_id: u64, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut id = next_id;
    loop {
        let mut r: u32 = rng.gen_range(0..100);
        // Keep the tree small: past 150 live files, creates become unlinks.
        let live = model
            .lock()
            .unwrap()
            .values()
            .filter(|k| !k.maybe_gone)
            .count();
        if live > 150 && r < 55 {
            r = 80;
        }
        if r < 55 {
            id += 1;
            let len = rng.gen_range(1..48 * 1024);
            let name = format!("f-{id}");
            let data = content(id, len);
            model.lock().unwrap().insert(
                id,
                Known {
                    len,
                    synced: false,
                    names: vec![name.clone()],
                    maybe_gone: false,
                },
            );
            let Ok(mut f) = File::create(dir.join(&name)) else {
                return;
            };
            for chunk in data.chunks(4096) {
                if f.write_all(chunk).is_err() {
                    return;
                }
            }
            if rng.gen_bool(0.3) {
                if f.sync_all().is_err() {
                    return;
                }
                // fsync commits all metadata staged so far, names included.
                let mut m = model.lock().unwrap();
                let k = m.get_mut(&id).unwrap();
                k.synced = true;
            }
        } else if r < 75 {
            let pick = {
                let m = model.lock().unwrap();
                let live: Vec<(u64, String)> = m
                    .iter()
                    .filter(|(_, k)| !k.maybe_gone)
                    .map(|(i, k)| (*i, k.names.last().unwrap().clone()))
                    .collect();
                if live.is_empty() {
                    continue;
                }
                live[rng.gen_range(0..live.len())].clone()
            };
            let to = format!("r-{}-{}", pick.0, rng.gen::<u16>());
            model
                .lock()
                .unwrap()
                .get_mut(&pick.0)
                .unwrap()
                .names
                .push(to.clone());
            if fs::rename(dir.join(&pick.1), dir.join(&to)).is_err() {
                return;
            }
        } else if r < 90 {
            let pick = {
                let m = model.lock().unwrap();
                let live: Vec<(u64, String)> = m
                    .iter()
                    .filter(|(_, k)| !k.maybe_gone)
                    .map(|(i, k)| (*i, k.names.last().unwrap().clone()))
                    .collect();
                if live.len() < 20 {
                    continue;
                }
                live[rng.gen_range(0..live.len())].clone()
            };
            model.lock().unwrap().get_mut(&pick.0).unwrap().maybe_gone = true;
            if fs::remove_file(dir.join(&pick.1)).is_err() {
                return;
            }
        } else {
            // Append to a live file through a new handle, then maybe sync.
            let pick = {
                let m = model.lock().unwrap();
                let live: Vec<(u64, String, usize)> = m
                    .iter()
                    .filter(|(_, k)| !k.maybe_gone)
                    .map(|(i, k)| (*i, k.names.last().unwrap().clone(), k.len))
                    .collect();
                if live.is_empty() {
                    continue;
                }
                live[rng.gen_range(0..live.len())].clone()
            };
            let extra = rng.gen_range(1..8192);
            let full = content(pick.0, pick.2 + extra);
            {
                let mut m = model.lock().unwrap();
                let k = m.get_mut(&pick.0).unwrap();
                k.len = pick.2 + extra;
                k.synced = false;
            }
            let Ok(mut f) = OpenOptions::new().append(true).open(dir.join(&pick.1)) else {
                return;
            };
            if f.write_all(&full[pick.2..]).is_err() {
                return;
            }
            if rng.gen_bool(0.5) {
                if f.sync_all().is_err() {
                    return;
                }
                model.lock().unwrap().get_mut(&pick.0).unwrap().synced = true;
            }
        }
    }
}

/// Check the recovered tree against the model, then make the model match
/// what survived.
fn verify(dir: &Path, model: &Model, round: usize) {
    let mut m = model.lock().unwrap();
    let mut seen: BTreeMap<u64, (String, Vec<u8>)> = BTreeMap::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let id = name_id(&name).unwrap_or_else(|| panic!("round {round}: stray name {name}"));
        let data = fs::read(e.path()).unwrap();
        assert!(
            seen.insert(id, (name.clone(), data)).is_none(),
            "round {round}: file {id} appears twice"
        );
    }
    for (id, (name, data)) in &seen {
        let k = m
            .get(id)
            .unwrap_or_else(|| panic!("round {round}: unknown file {name}"));
        assert!(
            k.names.contains(name),
            "round {round}: file {id} under a name it never had: {name}"
        );
        // Only bytes written to this very file, in order: never garbage.
        let want = content(*id, data.len());
        assert!(
            data.len() <= k.len,
            "round {round}: file {id} ({name}) is longer than anything written to it"
        );
        assert!(
            data[..] == want[..data.len()],
            "round {round}: file {id} ({name}) holds bytes it was never given"
        );
        if k.synced {
            assert!(
                data.len() >= k.len,
                "round {round}: file {id} lost synced bytes: {} of {}",
                data.len(),
                k.len
            );
        }
    }
    for (id, k) in m.iter() {
        if k.synced && !k.maybe_gone {
            assert!(
                seen.contains_key(id),
                "round {round}: synced file {id} ({:?}) vanished",
                k.names
            );
        }
    }
    // What survived is the new truth.
    m.retain(|id, _| seen.contains_key(id));
    for (id, (name, data)) in seen {
        let k = m.get_mut(&id).unwrap();
        k.names = vec![name];
        k.len = data.len();
        k.synced = true;
        k.maybe_gone = false;
    }
}

#[test]
fn killed_at_random_moments_the_store_stays_consistent() {
    common::engine::every_engine(|| {
        let rounds: usize = std::env::var("ARTFS_CRASH_ROUNDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(50);
        let seed: u64 = std::env::var("ARTFS_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| rand::thread_rng().gen());
        eprintln!("crash loop: {rounds} rounds, ARTFS_CRASH_SEED={seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut m = Mount::new();
        let model: Model = Arc::default();
        let started = Instant::now();
        for round in 0..rounds {
            let dir = m.mnt.clone();
            let mdl = model.clone();
            let next = model
                .lock()
                .unwrap()
                .keys()
                .next_back()
                .copied()
                .unwrap_or(0)
                + 1_000;
            let wseed = rng.gen();
            let worker = std::thread::spawn(move || workload(&dir, mdl, next, wseed));
            std::thread::sleep(Duration::from_millis(rng.gen_range(20..250)));
            // Kill first and let the workload run into the dead mount (ENOTCONN)
            // before detaching it, so nothing lands in the bare directory.
            m.kill_only();
            worker.join().unwrap();
            m.clear_stale();
            m.mount();
            verify(&m.mnt, &model, round);
            m.unmount();
            let (code, out) = m.fsck(false);
            assert_eq!(code, 0, "round {round} (seed {seed}): fsck:\n{out}");
            m.mount();
        }
        eprintln!(
            "crash loop: {rounds} rounds in {:.1} s, {} files alive",
            started.elapsed().as_secs_f64(),
            model.lock().unwrap().len()
        );
    });
}
