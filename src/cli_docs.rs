//! Shell completions and manual pages, generated from the command line's
//! clap definition at run time so they cannot drift from it.

use std::io::Write;
use std::path::{Path, PathBuf};

/// `artfs completions SHELL`: the script on `out`. (Generated into memory
/// first: the generator panics on a write error such as a closed pipe.)
pub fn completions(
    shell: clap_complete::Shell,
    cli: &mut clap::Command,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let name = cli.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(shell, cli, name, &mut script);
    out.write_all(&script)
}

/// `artfs man`: the page of the command itself (roff) on `out`.
pub fn man_page(cli: clap::Command, out: &mut dyn Write) -> std::io::Result<()> {
    clap_mangen::Man::new(cli).render(out)
}

/// `artfs man --dir DIR`: a page per command (`artfs.1`, `artfs-mount.1`,
/// ...) written into DIR; their paths, sorted.
pub fn man_pages(cli: clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(cli, dir)?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    pages.sort();
    Ok(pages)
}
