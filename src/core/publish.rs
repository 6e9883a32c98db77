//! Atomic publication of whole files (the HTTP door's PUT).
//!
//! An upload is written into a *staging* inode: a regular file with no
//! name and a link count of 0, like `open(O_TMPFILE)`. Nobody can reach it
//! while it fills. [`Fs::publish`] then links it under its name in one
//! mutation, replacing whatever file had the name (dropping that file's
//! link, as rename does): readers see the old file or the new one, never a
//! mix, and of concurrent uploads to one name the last to publish wins
//! whole.
//!
//! Crash safety: the staging inode's object is covered like a file created
//! open (a pending `create` intent, settled at the last release); an upload
//! never published leaves an inode with no links, which the last release
//! removes, or, if the daemon died, the next mount's orphan reclaim.

use std::sync::Arc;

use serde_json::json;

use super::namespace::owner_in;
use super::namespace::{check_name, check_not_trash, user_name};
use super::{Attr, Fs, Handle, NewFileId};
use crate::types::error::{eexist, eisdir, enoent, enotdir, Error, Result};
use crate::types::journal;
use crate::types::{Caller, Inode, Kind, Timestamp};

/// What the name must hold for a publish to go ahead (HTTP preconditions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Create or replace.
    Any,
    /// Only create (`If-None-Match: *`): EEXIST when the name exists.
    Absent,
    /// Only replace this very file (`If-Match`): ESTALE when the name is
    /// missing or names another file.
    FileId(String),
}

/// The name was changed by someone else since the caller looked.
pub fn estale() -> Error {
    Error::posix(libc::ESTALE, "the name no longer holds the expected file")
}

/// A published upload.
#[derive(Clone, Debug)]
pub struct Published {
    pub attr: Attr,
    /// The inode whose link the upload replaced.
    pub replaced: Option<u64>,
}

impl Fs {
    /// A nameless regular file in directory `parent` (which must exist) to
    /// write an upload into, open for writing. `perm` is used as given (no
    /// umask); `created_by` is recorded as the file's creator; `file_id`
    /// says which id it gets ([`NewFileId`]). `original_name`, when
    /// not empty, is kept as the original filename instead of the name the
    /// file is published under. Write with
    /// [`Fs::write`], make durable with [`Fs::fsync`], then
    /// [`Fs::publish`] and [`Fs::release`]; releasing without publishing
    /// discards it.
    pub fn create_staging(
        &self,
        caller: &Caller,
        parent: u64,
        perm: u32,
        created_by: &str,
        file_id: &NewFileId,
        original_name: &[u8],
    ) -> Result<(u64, Arc<Handle>)> {
        self.allow(super::policy::Change::Create)?;
        if let NewFileId::Chosen(_) = file_id {
            // Most of the wait for pending commits done before taking the
            // mutation lock (the check under it then rarely waits).
            self.wait_committed()?;
        }
        let (ino, intent) = self.mutate(|tx| {
            let dir = tx.live_dir(parent)?;
            let file_id = match file_id {
                NewFileId::Fresh => uuid::Uuid::now_v7().to_string(),
                NewFileId::Made(id) => id.clone(),
                NewFileId::Chosen(id) => {
                    self.check_new_file_id(id)?;
                    id.clone()
                }
            };
            // No umask, but the directory's default ACL applies (acl.rs).
            let (perm, acls) = super::acl::inherit(&tx.xattrs(parent)?, false, perm & 0o7777, 0);
            let (perm, gid) = owner_in(caller, &dir, Kind::File, perm);
            let now = Timestamp::now();
            let new = tx.insert(Inode {
                ino: 0,
                file_id,
                kind: Kind::File,
                perm,
                uid: caller.uid,
                gid,
                nlink: 0,
                size: 0,
                atime: now,
                mtime: now,
                ctime: now,
                crtime: now,
                rdev: 0,
                parent,
                target: None,
                created_by: if created_by.is_empty() {
                    user_name(caller.uid)
                } else {
                    created_by.to_string()
                },
                original_name: original_name.to_vec(),
                sha256: None,
                blocks: None,
                flags: 0,
                version: None,
            })?;
            if !acls.is_empty() {
                tx.set_xattrs(new.ino, acls);
            }
            // The write intent of the handle about to be opened, as for a
            // file created open; settled at the last release.
            let rec = journal::Record::new(
                journal::Op::Create,
                journal::Status::Pending,
                Some(new.file_id.clone()),
                json!({ "ino": new.ino, "parent": parent, "staging": true, "mode": new.mode() }),
            )
            .by_caller(caller);
            let id = rec.id;
            tx.log(rec);
            Ok((new.ino, id))
        })?;
        match self.open_handle(caller, ino, true, super::OpenChange::Nothing, Some(intent)) {
            Ok(h) => Ok((ino, h)),
            Err(e) => {
                // Nothing was written: drop the nameless inode now.
                let _ = self.mutate(|tx| {
                    let inode = tx.inode(ino)?;
                    tx.remove(&inode)
                });
                Err(e)
            }
        }
    }

    /// Refuse `file_id` when an inode of the store has it. Called inside a
    /// mutation: mutations are serial, so once the earlier ones are
    /// committed the store's table is the whole truth (the column is unique;
    /// the writer must never meet a duplicate).
    fn check_new_file_id(&self, file_id: &str) -> Result<()> {
        self.wait_committed()?;
        if self.meta.find_by_file_id(file_id)?.is_some() {
            return Err(Error::posix(
                libc::EEXIST,
                "a file with this file_id exists",
            ));
        }
        Ok(())
    }

    /// Link the staged inode `ino` as `name` in `parent`, replacing a file
    /// of that name, in one mutation, if `expect` holds. `sha256`, when
    /// given, is the hash of the content as written (the caller streamed
    /// it); it is recorded with the link. Logs an `upload` row. The caller
    /// still holds the staging handle and releases it afterwards.
    pub fn publish(
        &self,
        caller: &Caller,
        ino: u64,
        parent: u64,
        name: &[u8],
        expect: &Expect,
        sha256: Option<String>,
    ) -> Result<Published> {
        check_name(name)?;
        check_not_trash(parent, name)?;
        let (inode, replaced) = self.mutate(|tx| {
            let mut new = tx.inode(ino)?;
            if new.kind != Kind::File || new.nlink != 0 || !self.is_open(ino) {
                return Err(Error::posix(libc::EINVAL, "not a staged upload"));
            }
            let mut dir = tx.inode(parent)?;
            if !dir.kind.is_dir() {
                return Err(enotdir());
            }
            if dir.nlink == 0 {
                return Err(enoent());
            }
            super::flags::check(&dir, super::flags::Touch::AddEntry)?;
            let existing = tx.lookup(parent, name)?;
            match (expect, existing) {
                (Expect::Absent, Some(_)) => return Err(eexist()),
                (Expect::FileId(_), None) => return Err(estale()),
                (Expect::FileId(id), Some((e, _))) if tx.inode(e)?.file_id != *id => {
                    return Err(estale())
                }
                _ => {}
            }
            let now = Timestamp::now();
            let mut replaced = None;
            if let Some((e_ino, e_kind)) = existing {
                if e_kind.is_dir() {
                    return Err(eisdir());
                }
                // Replacing a file is what rw mode and retention forbid.
                self.allow(super::policy::Change::RenameOver)?;
                super::archive_attrs::check_retention(&tx.xattrs(e_ino)?)?;
                super::flags::check(&dir, super::flags::Touch::RemoveEntry)?;
                super::flags::check(&tx.inode(e_ino)?, super::flags::Touch::Name)?;
                tx.remove_entry(parent, name)?;
                let victim = tx.inode(e_ino)?;
                self.drop_link(tx, victim, now)?;
                replaced = Some(e_ino);
            }
            tx.add_entry(parent, name, ino, Kind::File)?;
            new.nlink = 1;
            new.parent = parent;
            if new.original_name.is_empty() {
                new.original_name = name.to_vec();
            }
            new.ctime = now;
            if sha256.is_some() {
                new.sha256 = sha256;
            }
            tx.put(&new)?;
            dir.mtime = now;
            dir.ctime = now;
            tx.put(&dir)?;
            tx.log(
                journal::Record::new(
                    journal::Op::Upload,
                    journal::Status::Committed,
                    Some(new.file_id.clone()),
                    json!({ "ino": ino, "parent": parent, "name": journal::name_json(name),
                            "size": new.size, "replaced_ino": replaced,
                            "expect": match expect {
                                Expect::Any => "any",
                                Expect::Absent => "absent",
                                Expect::FileId(_) => "file_id",
                            } }),
                )
                .by_caller(caller),
            );
            Ok((new, replaced))
        })?;
        // Named by the uploader: renaming it later keeps that name.
        self.name_is_final(inode.ino, inode.crtime);
        Ok(Published {
            attr: self.attr_of(inode)?,
            replaced,
        })
    }
}
