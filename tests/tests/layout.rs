//! The source tree's shape (issue 24, part 6): no source file over 700
//! lines, and no import cycle between files, in every crate of the
//! workspace.
//!
//! An edge runs from a file to each module file it names in a `use` or a
//! `crate::`/`super::` path. A module's own `mod` declarations and its
//! children's `super::` paths are the tree itself, not imports: edges
//! between a file and the files of its own child modules are left out.
//! Anything else that forms a cycle is reported with the files in it.
//!
//! `CLAUDEMESH_LAYOUT_ROOT` checks another checkout (to see the test fail
//! on a tree that breaks the rules).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 700;
const CRATES: &[&str] = &["broker", "ctl", "daemon", "protocol", "shim", "tests"];

fn root() -> PathBuf {
    std::env::var_os("CLAUDEMESH_LAYOUT_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file under `src` (`a/b.rs` and `a/b/mod.rs` are
/// `a::b`; `lib.rs`, `main.rs` are the crate root, as `bin/x.rs` is its
/// own root).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_owned());
    }
    parts
}

/// The `use` trees and `crate::`/`super::` paths of a file, each as the
/// path segments it names (before any `{`), `super` resolved against
/// `here` (the file's module) and `self` too.
fn named_paths(text: &str, here: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    for start in ["crate::", "super::", "self::"] {
        let mut rest = code.as_str();
        while let Some(i) = rest.find(start) {
            let before = rest[..i].chars().last();
            rest = &rest[i..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                rest = &rest[start.len()..];
                continue;
            }
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let path = &rest[..end];
            rest = &rest[end..];
            let mut segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
            let mut base: Vec<String> = match segs.first() {
                Some(&"crate") => Vec::new(),
                Some(&"self") => here.to_vec(),
                Some(&"super") => here.to_vec(),
                _ => continue,
            };
            if segs[0] == "crate" || segs[0] == "self" {
                segs.remove(0);
            }
            while segs.first() == Some(&"super") {
                segs.remove(0);
                base.pop();
            }
            base.extend(segs.iter().map(|s| (*s).to_owned()));
            out.push(base);
        }
    }
    out
}

struct Crate {
    /// Module path → file (relative to the workspace).
    files: BTreeMap<Vec<String>, String>,
    /// File → the files it imports.
    edges: BTreeMap<String, BTreeSet<String>>,
}

fn crate_graph(root: &Path, name: &str, too_long: &mut Vec<String>) -> Crate {
    let src = root.join(name).join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    paths.sort();
    let mut files = BTreeMap::new();
    let mut texts = Vec::new();
    for p in &paths {
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let text = fs::read_to_string(p).unwrap();
        let lines = text.lines().count();
        if lines > MAX_LINES {
            too_long.push(format!("{rel}: {lines} lines"));
        }
        // Binaries under src/bin are roots of their own: not modules.
        if p.strip_prefix(&src).unwrap().starts_with("bin") || p.ends_with("main.rs") {
            continue;
        }
        let module = module_of(&src, p);
        files.insert(module.clone(), rel.clone());
        texts.push((rel, module, text));
    }
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, module, text) in &texts {
        for path in named_paths(text, module) {
            // The longest prefix that is a module file.
            let target = (0..=path.len())
                .rev()
                .find_map(|n| files.get(&path[..n]).map(|f| (n, f)));
            let Some((n, to)) = target else { continue };
            let to_module = &path[..n];
            // Parent and child are the tree, not an import.
            let related = to_module.starts_with(module) || module.starts_with(to_module);
            if to != rel && !related {
                edges.entry(rel.clone()).or_default().insert(to.clone());
            }
        }
    }
    Crate { files, edges }
}

/// Every cycle's files (one per strongly connected component).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = edges
        .keys()
        .chain(edges.values().flat_map(|v| v.iter()))
        .collect();
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(n) = stack.pop() {
            for m in edges.get(&n).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    stack.push(m.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for n in &nodes {
        if done.contains(*n) || !reached[n].contains(*n) {
            continue;
        }
        let comp: Vec<String> = nodes
            .iter()
            .filter(|m| reached[n].contains(**m) && reached[*m].contains(*n))
            .map(|m| (*m).clone())
            .collect();
        done.extend(comp.iter().cloned());
        out.push(comp);
    }
    out
}

#[test]
fn no_source_file_is_over_700_lines_and_no_files_import_each_other() {
    let root = root();
    let mut too_long = Vec::new();
    let mut found = Vec::new();
    let mut modules = 0;
    for name in CRATES {
        let g = crate_graph(&root, name, &mut too_long);
        modules += g.files.len();
        for c in cycles(&g.edges) {
            found.push(c.join(" <-> "));
        }
    }
    println!("{modules} module files checked");
    assert!(
        modules > 50,
        "the source tree was not found under {}",
        root.display()
    );
    assert!(
        too_long.is_empty(),
        "source files over {MAX_LINES} lines:\n{}",
        too_long.join("\n")
    );
    assert!(
        found.is_empty(),
        "files that import each other:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_cycle_check_sees_a_cycle_and_leaves_the_tree_alone() {
    let e = |pairs: &[(&str, &str)]| {
        let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in pairs {
            m.entry((*a).into()).or_default().insert((*b).into());
        }
        m
    };
    assert_eq!(
        cycles(&e(&[("a", "b"), ("b", "c")])),
        Vec::<Vec<String>>::new()
    );
    assert_eq!(
        cycles(&e(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")])),
        vec![vec!["a".to_owned(), "b".into(), "c".into()]]
    );
    let here = vec!["hub".to_owned(), "presence".to_owned()];
    let paths = named_paths(
        "use super::conn::ConnHandle;\nuse crate::store::{A, B};\n// use crate::nothing;\nlet x = self::inner::f();",
        &here,
    );
    assert_eq!(
        paths,
        vec![
            vec!["store".to_owned()],
            vec!["hub".to_owned(), "conn".into(), "ConnHandle".into()],
            vec![
                "hub".to_owned(),
                "presence".into(),
                "inner".into(),
                "f".into()
            ],
        ]
    );
}
