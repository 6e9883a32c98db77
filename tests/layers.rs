//! The layering rule of docs/ARCHITECTURE.md, checked on the source: a
//! module may name only modules of a lower layer (or itself), and the files
//! of one module form no circle. A `use crate::` (or a `crate::x::` path)
//! that points up fails here with the file and the edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules of src/lib.rs by layer, lowest first. Keep in step
/// with the picture in docs/ARCHITECTURE.md.
const LAYERS: &[(&str, u8)] = &[
    // 0: plain types and helpers that know nothing of the crate.
    ("types", 0),
    ("failpoints", 0),
    ("auth", 0),
    ("logging", 0),
    // 1: the stores behind the core.
    ("meta", 1),
    ("blob", 1),
    ("cluster", 1),
    // 2: the filesystem rules.
    ("core", 2),
    // 3: offline commands and jobs, configuration, service glue.
    ("cmd", 3),
    ("config", 3),
    ("notify", 3),
    ("cli_docs", 3),
    // 4: the doors.
    ("fuse", 4),
    ("api", 4),
    ("mount_helper", 4),
];

/// Macros exported at the crate root, by the module that defines them.
const MACROS: &[(&str, &str)] = &[("crash_point", "failpoints")];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source without comments and string literals (a path in a doc
/// comment or a message is not a dependency).
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let end = text[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            i = end;
        } else if b[i] == b'"' && !(i > 0 && (b[i - 1] == b'\'' || b[i - 1] == b'#')) {
            out.push(' ');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if b[i] == b'r' && b[i..].starts_with(b"r#\"") {
            let end = text[i + 3..].find("\"#").map_or(b.len(), |e| i + 3 + e + 2);
            i = end;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The items named right after `prefix::` everywhere in `code`: `a` for
/// `prefix::a::b`, and `a`, `b` for `prefix::{a::x, b}`.
fn names_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().last();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group (nested braces belong to them).
            let (mut depth, mut item_start, mut i) = (0usize, 0usize, 0usize);
            let g = group.as_bytes();
            while i < g.len() {
                match g[i] {
                    b'{' => depth += 1,
                    b'}' if depth == 0 => break,
                    b'}' => depth -= 1,
                    b',' if depth == 0 => {
                        out.insert(ident_at(group[item_start..].trim_start()).to_string());
                        item_start = i + 1;
                    }
                    _ => {}
                }
                i += 1;
            }
            out.insert(ident_at(group[item_start..i].trim_start()).to_string());
        } else {
            out.insert(ident_at(rest).to_string());
        }
    }
    out.retain(|n| !n.is_empty() && n != "self");
    out
}

/// (module, file stem within it) of a source file; `None` for the binary.
fn place(path: &Path) -> Option<(String, String)> {
    let rel = path.strip_prefix(src()).unwrap();
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    match parts.as_slice() {
        [f] if f == "main" || f == "lib" => None,
        [f] => Some((f.clone(), "mod".into())),
        [m, rest @ ..] => Some((m.clone(), rest.join("/"))),
        [] => None,
    }
}

struct Source {
    module: String,
    file: String,
    code: String,
}

fn sources() -> Vec<Source> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    files
        .iter()
        .filter_map(|p| {
            let (module, file) = place(p)?;
            let code = code_of(&std::fs::read_to_string(p).unwrap());
            Some(Source { module, file, code })
        })
        .collect()
}

/// Modules of the crate a file names.
fn modules_named(s: &Source) -> BTreeSet<String> {
    let mut named = names_after(&s.code, "crate::");
    if s.file == "mod" {
        // In a top-level module's root, `super::x` is the crate's `x`.
        named.extend(names_after(&s.code, "super::"));
    }
    named
        .into_iter()
        .map(|n| {
            MACROS
                .iter()
                .find(|(m, _)| *m == n)
                .map_or(n.clone(), |(_, owner)| owner.to_string())
        })
        .filter(|n| layer(n).is_some())
        .collect()
}

#[test]
fn every_module_has_a_layer() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    for line in lib.lines() {
        if let Some(m) = line.trim().strip_prefix("pub mod ") {
            let m = m.trim_end_matches(';');
            assert!(
                layer(m).is_some(),
                "module {m} has no layer in tests/layers.rs (and docs/ARCHITECTURE.md)"
            );
        }
    }
}

#[test]
fn dependencies_point_down() {
    let mut wrong = Vec::new();
    for s in sources() {
        let mine = layer(&s.module).unwrap_or_else(|| panic!("{} has no layer", s.module));
        for m in modules_named(&s) {
            if m != s.module && layer(&m).unwrap() >= mine {
                wrong.push(format!(
                    "src/{}/{}.rs (layer {mine}) names {m} (layer {})",
                    s.module,
                    s.file,
                    layer(&m).unwrap()
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "dependencies that point up or sideways:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_circles_between_files() {
    let all = sources();
    let mut by_module: BTreeMap<&str, Vec<&Source>> = BTreeMap::new();
    for s in &all {
        by_module.entry(&s.module).or_default().push(s);
    }
    for (module, files) in by_module {
        let stems: BTreeSet<&str> = files
            .iter()
            .map(|s| s.file.as_str())
            .filter(|f| *f != "mod")
            .collect();
        // Edges between sibling files; the module root is where the
        // siblings meet, so edges to it do not count.
        let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for s in &files {
            if s.file == "mod" || s.file.contains('/') {
                continue;
            }
            let mut named = names_after(&s.code, "super::");
            named.extend(names_after(&s.code, &format!("crate::{module}::")));
            for n in named {
                if let Some(t) = stems.get(n.as_str()) {
                    if *t != s.file {
                        edges.entry(s.file.as_str()).or_default().insert(t);
                    }
                }
            }
        }
        if let Some(cycle) = find_cycle(&edges) {
            panic!("files of {module} form a circle: {}", cycle.join(" -> "));
        }
    }
}

fn find_cycle<'a>(edges: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Option<Vec<&'a str>> {
    fn visit<'a>(
        n: &'a str,
        edges: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(at) = path.iter().position(|p| *p == n) {
            let mut c = path[at..].to_vec();
            c.push(n);
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n);
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n);
        None
    }
    let mut done = BTreeSet::new();
    for n in edges.keys() {
        if let Some(c) = visit(n, edges, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

/// The checker itself must see what it checks for.
#[test]
fn the_checker_sees_edges() {
    let code = code_of(
        "use crate::{core::Fs, meta};\n// crate::api in a comment\nlet s = \"crate::fuse\";\nuse crate::types::error::Result;\nx = crate::crash_point!(\"a\");",
    );
    let names = names_after(&code, "crate::");
    assert_eq!(
        names,
        ["core", "crash_point", "meta", "types"]
            .into_iter()
            .map(String::from)
            .collect()
    );
    let mut edges = BTreeMap::new();
    edges.insert("a", BTreeSet::from(["b"]));
    edges.insert("b", BTreeSet::from(["c"]));
    assert!(find_cycle(&edges).is_none());
    edges.insert("c", BTreeSet::from(["a"]));
    assert_eq!(find_cycle(&edges).unwrap(), vec!["a", "b", "c", "a"]);
}
