//! The module boundaries of docs/architecture.md, checked by reading the source: which crate
//! modules each module names (`use crate::x` lines and `crate::x::` paths), that nothing below
//! cli/ prints, that no file grows past ~600 lines, and that the TUI's screens read nothing from
//! the store. Test code (files declared under `#[cfg(test)]`, and a file's `#[cfg(test)]`
//! module at its end) may cross the boundaries.
//! Where the code does not yet keep a rule, the exception is named here with its reason, so the
//! rule tightens as they are removed: an exception that no longer happens fails the test too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module and the crate modules it may name.
const ALLOWED: &[(&str, &[&str])] = &[
    ("domain", &[]),
    ("table", &[]),
    // Guideline files are parsed into plain types (Guideline, Reason) that store keeps.
    ("guidelines", &["domain"]),
    ("store", &["domain", "guidelines"]),
    // qa turns the store's rows into pairs and statistics; data exports and report shows
    // those resolved pairs, so both may use qa's one definition of a pair.
    ("qa", &["store", "domain", "table"]),
    ("data", &["store", "domain", "qa"]),
    ("report", &["store", "domain", "qa"]),
    ("samples", &["data", "domain", "guidelines"]),
    ("model", &[]),
    ("train", &["model"]),
    ("jobs", &["domain", "store", "qa", "data", "model", "train"]),
    ("tui", &["domain", "store", "qa", "data", "report", "guidelines", "jobs", "samples", "table"]),
    ("cli", &["*"]),
    ("lib", &["*"]),
    ("main", &["*"]),
];

/// (file, module it names, why) that break a rule today.
const IMPORT_EXCEPTIONS: &[(&str, &str, &str)] = &[];

/// Files that print to stdout/stderr below cli/, and why.
const PRINT_EXCEPTIONS: &[(&str, &str)] = &[
    ("tui/mod.rs", "after leaving the alternate screen: a note that the training run is being stopped"),
    ("model/testing_skip.rs", "test support: tells the person running `cargo test` that a model test was skipped"),
];

/// Files over the size limit, and why.
const LINE_LIMIT: usize = 600;
const SIZE_EXCEPTIONS: &[(&str, &str)] = &[];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every .rs file under src/, relative to it, with its text.
fn sources() -> BTreeMap<String, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&src(), &mut files);
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(src()).unwrap().to_string_lossy().replace('\\', "/");
            (rel, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// Files compiled only for tests: `#[cfg(test)]` (with any `#[path]`) before `mod name;`.
fn test_files(files: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (rel, text) in files {
        let dir = Path::new(rel).parent().unwrap_or(Path::new(""));
        let stem = Path::new(rel).file_stem().unwrap().to_string_lossy().to_string();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for (i, line) in lines.iter().enumerate() {
            if *line != "#[cfg(test)]" {
                continue;
            }
            let mut path_attr = None;
            for next in &lines[i + 1..] {
                if let Some(p) = next.strip_prefix("#[path = \"").and_then(|p| p.strip_suffix("\"]")) {
                    path_attr = Some(p.to_string());
                } else if next.starts_with("#[") {
                } else {
                    let declared = next.trim_start_matches("pub(crate) ").trim_start_matches("pub ");
                    if let Some(name) = declared.strip_prefix("mod ").and_then(|n| n.strip_suffix(';')) {
                        let base = if matches!(stem.as_str(), "mod" | "lib" | "main") {
                            dir.to_path_buf()
                        } else {
                            dir.join(&stem)
                        };
                        let file = match &path_attr {
                            Some(p) => dir.join(p),
                            None if files
                                .contains_key(&base.join(format!("{name}/mod.rs")).to_string_lossy().to_string()) =>
                            {
                                base.join(format!("{name}/mod.rs"))
                            }
                            None => base.join(format!("{name}.rs")),
                        };
                        out.insert(file.to_string_lossy().replace('\\', "/"));
                    }
                    break;
                }
            }
        }
    }
    out
}

/// The library lines of a file: up to its `#[cfg(test)] mod … {` block, without comments.
fn library_lines(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        if t == "#[cfg(test)]"
            && lines.get(i + 1).is_some_and(|n| n.trim_start().starts_with("mod ") && n.trim_end().ends_with('{'))
        {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        let code = match line.find("//") {
            // A `//` inside a string ("https://…") is rare in paths we look for; cut at it anyway.
            Some(at) => &line[..at],
            None => line,
        };
        out.push((i + 1, code));
    }
    out
}

fn module_of(rel: &str) -> String {
    rel.split('/').next().unwrap().trim_end_matches(".rs").to_string()
}

/// The crate modules a line names: `crate::x` and the items of `use crate::{x, y::z}`.
fn named_modules(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        } else {
            let name: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
        rest = after;
    }
    out
}

#[test]
fn each_module_names_only_the_modules_its_rule_allows() {
    let files = sources();
    let tests = test_files(&files);
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut broken = Vec::new();
    let mut excused = BTreeSet::new();
    for (rel, text) in files.iter().filter(|(rel, _)| !tests.contains(*rel)) {
        let module = module_of(rel);
        let Some(may) = allowed.get(module.as_str()) else {
            broken
                .push(format!("{rel}: module {module} has no rule in ALLOWED (add one, and to docs/architecture.md)"));
            continue;
        };
        for (line_no, line) in library_lines(text) {
            for named in named_modules(line) {
                if named == module || may.contains(&"*") || may.contains(&named.as_str()) {
                    continue;
                }
                if let Some(e) = IMPORT_EXCEPTIONS.iter().find(|(f, m, _)| *f == rel && *m == named) {
                    excused.insert((e.0, e.1));
                    continue;
                }
                broken.push(format!("{rel}:{line_no}: {module} may not name crate::{named}: {}", line.trim()));
            }
        }
    }
    assert!(broken.is_empty(), "module boundaries broken:\n{}", broken.join("\n"));
    let stale: Vec<_> = IMPORT_EXCEPTIONS.iter().filter(|(f, m, _)| !excused.contains(&(*f, *m))).collect();
    assert!(stale.is_empty(), "these exceptions no longer happen: remove them from IMPORT_EXCEPTIONS: {stale:?}");
}

#[test]
fn nothing_below_cli_prints() {
    let files = sources();
    let tests = test_files(&files);
    let mut broken = Vec::new();
    let mut excused = BTreeSet::new();
    for (rel, text) in files.iter().filter(|(rel, _)| !tests.contains(*rel)) {
        if rel.starts_with("cli/") || rel == "main.rs" {
            continue;
        }
        for (line_no, line) in library_lines(text) {
            let prints = ["println!(", "print!(", "eprintln!(", "eprint!(", "dbg!("].iter().any(|m| {
                line.match_indices(m).any(|(at, _)| {
                    at == 0 || !line.as_bytes()[at - 1].is_ascii_alphanumeric() && line.as_bytes()[at - 1] != b'_'
                })
            });
            if !prints {
                continue;
            }
            if PRINT_EXCEPTIONS.iter().any(|(f, _)| *f == rel) {
                excused.insert(rel.clone());
                continue;
            }
            broken.push(format!("{rel}:{line_no}: {}", line.trim()));
        }
    }
    assert!(
        broken.is_empty(),
        "printing below cli/ (send progress through the job's events or a callback; log with tracing):\n{}",
        broken.join("\n")
    );
    let stale: Vec<_> = PRINT_EXCEPTIONS.iter().filter(|(f, _)| !excused.contains(*f)).collect();
    assert!(stale.is_empty(), "these files no longer print: remove them from PRINT_EXCEPTIONS: {stale:?}");
}

#[test]
fn no_file_is_over_the_size_limit() {
    let files = sources();
    let mut broken = Vec::new();
    for (rel, text) in &files {
        let lines = text.lines().count();
        let excused = SIZE_EXCEPTIONS.iter().any(|(f, _)| f == rel);
        if lines > LINE_LIMIT && !excused {
            broken.push(format!("{rel}: {lines} lines"));
        }
        if excused && lines <= LINE_LIMIT {
            broken.push(format!("{rel}: {lines} lines, within the limit now: remove it from SIZE_EXCEPTIONS"));
        }
    }
    assert!(broken.is_empty(), "files over {LINE_LIMIT} lines (split by concern):\n{}", broken.join("\n"));
}

/// Screens that name the store, and why: every other screen gets what it shows from `App`.
const SCREEN_STORE_EXCEPTIONS: &[(&str, &str)] =
    &[("tui/screens/qa.rs", "its statistics thread opens its own connection; the UI thread reads nothing")];

#[test]
fn the_screens_read_nothing_from_the_store() {
    let files = sources();
    let tests = test_files(&files);
    let mut broken = Vec::new();
    let mut excused = BTreeSet::new();
    for (rel, text) in files.iter().filter(|(rel, _)| rel.starts_with("tui/screens/") && !tests.contains(*rel)) {
        for (line_no, line) in library_lines(text) {
            let names_store = line.match_indices("Store").any(|(at, _)| {
                let before = line[..at].chars().next_back();
                let after = line[at + "Store".len()..].chars().next();
                !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                    && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
            });
            if !names_store {
                continue;
            }
            if SCREEN_STORE_EXCEPTIONS.iter().any(|(f, _)| f == rel) {
                excused.insert(rel.clone());
                continue;
            }
            broken.push(format!("{rel}:{line_no}: {}", line.trim()));
        }
    }
    assert!(
        broken.is_empty(),
        "a screen names the store (read it in tui/app/ and hand the screen what it shows):\n{}",
        broken.join("\n")
    );
    let stale: Vec<_> = SCREEN_STORE_EXCEPTIONS.iter().filter(|(f, _)| !excused.contains(*f)).collect();
    assert!(stale.is_empty(), "these screens no longer name the store: remove them: {stale:?}");
}

#[test]
fn the_checks_see_what_they_look_for() {
    assert_eq!(named_modules("use crate::{domain::Split, store::Store};"), ["domain", "store"]);
    assert_eq!(named_modules("    let x = crate::qa::resolve(&a, crate::store::x());"), ["qa", "store"]);
    let files = sources();
    let tests = test_files(&files);
    assert!(tests.contains("model/tests_families.rs") && tests.contains("qa/arena_tests.rs"), "{tests:?}");
    assert!(!tests.contains("model/llama.rs"));
    let lines = library_lines("use a;\n// crate::x\n#[cfg(test)]\nmod tests {\n    use crate::y;\n}\n");
    assert_eq!(lines.len(), 1);
}
