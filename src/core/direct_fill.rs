//! An upload's body written with O_DIRECT (issue 20).
//!
//! A buffered upload copies every byte into the page cache, and the
//! kernel then writes it back: on the reference VM that copy cost more
//! than the disk (a buffered `dd` of 1 GiB took 2.9-3.6 s, 2.4-3.0 s of it
//! system time, where O_DIRECT took 0.7-1.0 s with 0.2 s), and the page
//! cache it fills is of no use to an archive that just took a file in.
//! So the body is gathered into block-aligned buffers (one copy, which
//! O_DIRECT's alignment needs anyway), each hashed on a thread of its own
//! while it is written straight to the disk. The last partial block goes
//! through the page cache, and the upload's fsync still makes it all
//! durable. A filesystem that takes no O_DIRECT opens gets the buffered
//! path (`Fs::fill`).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::mpsc::channel;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::Content;
use super::Fs;
use crate::types::error::Result;

/// What O_DIRECT offsets, lengths and buffers are aligned to: the page
/// size covers every logical block size in use.
const ALIGN: usize = 4096;
/// One write (and one hash batch). 4 MiB did no better here, and three of
/// these per upload in flight (`--api-max-uploads`, 16) is memory enough.
const CHUNK: usize = 2 << 20;
/// Buffers in flight: one filling, one being written, one being hashed.
const BUFFERS: usize = 3;

/// A buffer of up to `CHUNK` bytes whose start is `ALIGN`-aligned. Its
/// room is allocated once and filled as bytes come, never zeroed first: a
/// small upload touches only the pages it fills.
struct Aligned {
    raw: Vec<u8>,
    /// Where the aligned part starts in `raw` (the bytes before it are
    /// padding).
    start: usize,
}

impl Aligned {
    fn new() -> Aligned {
        let mut raw: Vec<u8> = Vec::with_capacity(CHUNK + ALIGN);
        let start = raw.as_ptr().align_offset(ALIGN);
        raw.resize(start, 0);
        Aligned { raw, start }
    }

    fn bytes(&self) -> &[u8] {
        &self.raw[self.start..]
    }

    /// Copy as much of `src` as fits; returns how much did. Within the
    /// capacity, so the buffer never moves.
    fn take(&mut self, src: &[u8]) -> usize {
        let n = src.len().min(CHUNK - self.bytes().len());
        self.raw.extend_from_slice(&src[..n]);
        n
    }

    fn full(&self) -> bool {
        self.bytes().len() == CHUNK
    }

    fn clear(&mut self) {
        self.raw.truncate(self.start);
    }
}

/// The handle's object opened again for writing with O_DIRECT; `None`
/// where its filesystem refuses that (tmpfs before Linux 6.6, FUSE
/// without direct I/O, ...).
pub(super) fn reopen_direct(file: &File) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    // Tests take the buffered path here, where every filesystem has O_DIRECT.
    fail::fail_point!("upload::no_direct", |_| None);
    let path = format!("/proc/self/fd/{}", file.as_raw_fd());
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| tracing::debug!(error = %e, "upload: no O_DIRECT here; buffered"))
        .ok()
}

impl Fs {
    /// Write `content` into the new file `fh` from offset 0 through
    /// `direct`, hashing it in order; returns the hex SHA-256.
    pub(super) fn fill_direct(
        &self,
        fh: u64,
        content: &mut dyn Content,
        direct: &File,
    ) -> Result<String> {
        let (back, returned) = channel::<Arc<Aligned>>();
        let feed = |h: &mut Sha256, batch: &Arc<Aligned>| h.update(batch.bytes());
        // Each buffer comes back once hashed (the writer has let go of it
        // by then: it writes before it asks for another).
        let done = move |batch| {
            let _ = back.send(batch);
        };
        super::checksum::hashed_beside(BUFFERS, feed, done, |to_hash| {
            let mut made = 0;
            let mut next_buffer = || -> Aligned {
                if made < BUFFERS {
                    made += 1;
                    return Aligned::new();
                }
                match returned.recv().map(Arc::try_unwrap) {
                    Ok(Ok(mut b)) => {
                        b.clear();
                        b
                    }
                    _ => Aligned::new(),
                }
            };
            // A filesystem that opens with O_DIRECT but wants another
            // alignment refuses the write (EINVAL): the rest goes buffered.
            let direct_works = std::cell::Cell::new(true);
            let write = |buf: Aligned, offset: &mut u64, last: bool| -> Result<()> {
                let buf = Arc::new(buf);
                to_hash(buf.clone())?;
                let data = buf.bytes();
                let whole = data.len() / ALIGN * ALIGN;
                debug_assert!(last || whole == data.len());
                if whole > 0 && direct_works.get() {
                    let put = || {
                        fail::fail_point!("upload::direct_write", |_| Err(
                            crate::types::error::Error::posix(
                                libc::EINVAL,
                                "failpoint upload::direct_write"
                            )
                        ));
                        self.write_direct(fh, *offset, &data[..whole], direct)
                    };
                    match put() {
                        Err(e) if e.errno() == libc::EINVAL => {
                            tracing::debug!(error = %e, "upload: O_DIRECT write refused; buffered");
                            direct_works.set(false);
                        }
                        r => {
                            r?;
                        }
                    }
                }
                if whole > 0 && !direct_works.get() {
                    self.write(fh, *offset, &data[..whole])?;
                }
                if whole < data.len() {
                    self.write(fh, *offset + whole as u64, &data[whole..])?;
                }
                *offset += data.len() as u64;
                Ok(())
            };
            let mut offset = 0u64;
            let mut buf = next_buffer();
            while let Some(pieces) = content.next_pieces()? {
                for piece in &pieces {
                    let mut rest = &piece[..];
                    while !rest.is_empty() {
                        rest = &rest[buf.take(rest)..];
                        if buf.full() {
                            let full = std::mem::replace(&mut buf, next_buffer());
                            write(full, &mut offset, false)?;
                        }
                    }
                }
            }
            write(buf, &mut offset, true)
        })
    }
}
