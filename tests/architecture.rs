//! The layout stays the one the README draws: each top-level module of the library uses only the
//! modules below it in [`LAYERS`], so dependencies run one way, from the command line down to the
//! graph, and no two modules import each other. Also no source file grows past 700 lines.

use std::path::{Path, PathBuf};

mod common;

/// Top to bottom: a module may use those after it, never one before it.
const LAYERS: [&str; 12] = ["distributed", "bench", "train", "server", "serve", "compare", "observe", "run", "data", "graph", "proto", "util"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The library's files with their top-level module (`src/train/graph.rs` -> `train`); the binary
/// (main.rs, cli/) and lib.rs stand above every layer.
fn library_files() -> Vec<(String, PathBuf)> {
    let src = common::repo().join("src");
    let mut files = vec![];
    rust_files(&src, &mut files);
    files
        .into_iter()
        .filter_map(|f| {
            let first = f.strip_prefix(&src).unwrap().components().next()?.as_os_str().to_string_lossy().into_owned();
            let module = first.trim_end_matches(".rs").to_string();
            (!["main", "lib", "cli"].contains(&module.as_str())).then_some((module, f))
        })
        .collect()
}

/// The top-level modules a file names as `crate::X`, outside comments.
fn uses(text: &str) -> Vec<String> {
    let mut out = vec![];
    for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
        for (i, _) in line.match_indices("crate::") {
            let name: String = line[i + 7..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            if !name.is_empty() && !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
}

#[test]
fn every_module_uses_only_the_layers_below_it() {
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    let mut wrong = vec![];
    for (module, file) in library_files() {
        let own = rank(&module).unwrap_or_else(|| panic!("{}: module {module} is in no layer of LAYERS", file.display()));
        for used in uses(&std::fs::read_to_string(&file).unwrap()) {
            match rank(&used) {
                Some(r) if r > own || used == module => {}
                Some(_) => wrong.push(format!("{} ({module}) uses {used}, a layer above it", file.display())),
                None => wrong.push(format!("{} uses crate::{used}, which is in no layer", file.display())),
            }
        }
    }
    assert!(wrong.is_empty(), "dependencies must run down the layers {LAYERS:?}:\n{}", wrong.join("\n"));
}

#[test]
fn the_check_sees_an_upward_use() {
    // The test above would pass on a file it could not parse: make sure it parses these.
    assert_eq!(uses("use crate::train::graph::TrainGraph;\n// crate::serve\nlet x = crate::util::rng::Rng::new(1, 2);"), ["train", "util"]);
}

#[test]
fn no_source_file_is_over_700_lines() {
    let src = common::repo().join("src");
    let mut files = vec![];
    rust_files(&src, &mut files);
    let long: Vec<String> = files
        .iter()
        .map(|f| (f, std::fs::read_to_string(f).unwrap().lines().count()))
        .filter(|(_, n)| *n > 700)
        .map(|(f, n)| format!("{}: {n} lines", f.display()))
        .collect();
    assert!(long.is_empty(), "split these along their concerns:\n{}", long.join("\n"));
}
