//! The offline commands and the checks the HTTP door runs as jobs:
//! `artfs fsck`, `artfs rebuild`, `artfs scrub`, `artfs import` and
//! `artfs db copy`. Each
//! works on the stores (`meta`, `blob`) through the core's rules.

pub mod db_copy;
pub mod fsck;
pub mod import;
pub mod rebuild;
pub mod scrub;
