//! artfs: a crash-safe POSIX filesystem whose content lives as objects
//! under a BACKING directory and whose namespace and metadata live in SQL
//! tables. See docs/ARCHITECTURE.md for the map of modules.
//!
//! Dependencies point down five layers, checked by `tests/layers.rs`:
//! 0 `types`, `auth`, `failpoints`, `logging` (know nothing of the crate)
//! → 1 `meta` (metadata stores), `blob` (content), `cluster` (Redis) → 2 `core` (every
//! filesystem rule, written once) → 3 `cmd` (offline commands), `config`,
//! `notify`, `cli_docs` → 4 the doors `fuse`, `api` and `mount_helper`
//! (mount(8)'s). A module names only lower layers; the files of one
//! module form no circle.

pub mod api;
pub mod auth;
pub mod blob;
pub mod cli_docs;
pub mod cluster;
pub mod cmd;
pub mod config;
pub mod core;
pub mod failpoints;
pub mod fuse;
pub mod logging;
pub mod meta;
pub mod mount_helper;
pub mod notify;
pub mod types;
