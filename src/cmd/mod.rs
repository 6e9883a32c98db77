//! The offline commands and the checks the HTTP door runs as jobs:
//! `artfs fsck`, `artfs rebuild`, `artfs scrub`, `artfs import`,
//! `artfs db copy` and `artfs status`. Each
//! works on the stores (`meta`, `blob`) through the core's rules.

pub mod db_copy;
pub mod fsck;
pub mod import;
pub mod rebuild;
pub mod scrub;
pub mod status;
