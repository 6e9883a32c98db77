//! Key pairs for the JWT tests, made with the openssl command (real keys,
//! as users make them).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Run `openssl ARGS`, failing the test on error.
pub fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl command (scripts/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl genpkey GENPKEY` into `DIR/NAME.pem`, its public key into
/// `DIR/NAME.pub`; returns both paths.
pub fn genpkey(dir: &Path, name: &str, genpkey: &[&str]) -> (PathBuf, PathBuf) {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub"));
    let mut args = vec!["genpkey"];
    args.extend_from_slice(genpkey);
    args.extend_from_slice(&["-out", private.to_str().unwrap()]);
    openssl(&args);
    openssl(&[
        "pkey",
        "-in",
        private.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    (private, public)
}
