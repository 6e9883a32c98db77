//! artfs: a crash-safe POSIX filesystem whose content lives as objects
//! under a BACKING directory and whose namespace and metadata live in SQL
//! tables. See docs/ARCHITECTURE.md for the map of modules.
//!
//! Dependencies point one way: `fuse` and `api` → `core` → `meta` /
//! `blob`. `auth` (JWT verification and roles, used by the HTTP door in
//! `api`) depends on none of them.

pub mod api;
pub mod auth;
pub mod blob;
pub mod cmd;
pub mod config;
pub mod core;
pub mod failpoints;
pub mod fuse;
pub mod meta;
pub mod notify;
pub mod types;
