//! Reviewer guidelines: Markdown files whose TOML front matter (between `+++` lines)
//! defines the reason taxonomy that the TUI, the judgments and the exports use.
//!
//! The default set is embedded in the binary; a `guidelines/` folder next to the
//! database, or `--guidelines DIR`, replaces it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::domain::sha256_hex;

/// The guidelines shipped with verdict, compiled in.
pub const EMBEDDED: &[(&str, &str)] = &[
    ("default.md", include_str!("../../guidelines/default.md")),
    ("banking.md", include_str!("../../guidelines/banking.md")),
    ("healthcare.md", include_str!("../../guidelines/healthcare.md")),
    ("insurance.md", include_str!("../../guidelines/insurance.md")),
];

/// One reason a response can lose for, with its one-key shortcut.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    pub key: String,
    pub label: String,
    pub shortcut: String,
    pub description: String,
}

#[derive(Debug, Deserialize)]
struct FrontMatter {
    title: String,
    domain: String,
    #[serde(default)]
    reasons: Vec<Reason>,
}

/// One guideline document: the default, or a domain addendum.
#[derive(Debug, Clone, PartialEq)]
pub struct Guideline {
    /// File name without `.md`.
    pub name: String,
    pub title: String,
    /// `default`, or the prompt domain the addendum applies to.
    pub domain: String,
    pub reasons: Vec<Reason>,
    /// The whole file, front matter included: the version is its hash.
    pub content: String,
    pub hash: String,
}

impl Guideline {
    /// The Markdown after the front matter.
    pub fn body(&self) -> &str {
        split_front_matter(&self.content).map(|(_, body)| body).unwrap_or(&self.content)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GuidelineError {
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    #[error("{0}: cannot read the guidelines folder: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}: no default.md in the guidelines folder (it defines the reason tags)")]
    NoDefault(PathBuf),
}

/// Parses one guideline file.
pub fn parse(file_name: &str, content: &str) -> Result<Guideline, GuidelineError> {
    let invalid = |message: String| GuidelineError::Invalid { file: file_name.to_string(), message };
    let (front, _) = split_front_matter(content)
        .ok_or_else(|| invalid("must start with a TOML front matter block between two `+++` lines".into()))?;
    let meta: FrontMatter = toml::from_str(front).map_err(|e| invalid(format!("front matter: {e}")))?;
    let mut seen = std::collections::HashSet::new();
    for reason in &meta.reasons {
        if reason.shortcut.chars().count() != 1 {
            return Err(invalid(format!(
                "reason `{}`: shortcut must be one key, found \"{}\"",
                reason.key, reason.shortcut
            )));
        }
        if !seen.insert(reason.shortcut.clone()) {
            return Err(invalid(format!("reason `{}`: shortcut \"{}\" is used twice", reason.key, reason.shortcut)));
        }
    }
    Ok(Guideline {
        name: file_name.trim_end_matches(".md").to_string(),
        title: meta.title,
        domain: meta.domain,
        reasons: meta.reasons,
        content: content.to_string(),
        hash: sha256_hex(&["guideline", content]),
    })
}

fn split_front_matter(content: &str) -> Option<(&str, &str)> {
    let rest = content.strip_prefix("+++\n").or_else(|| content.strip_prefix("+++\r\n"))?;
    let end = rest.find("\n+++")?;
    let after = &rest[end + 4..];
    Some((&rest[..end], after.strip_prefix("\r").unwrap_or(after).strip_prefix('\n').unwrap_or(after)))
}

/// The embedded guidelines.
pub fn embedded() -> Vec<Guideline> {
    EMBEDDED.iter().map(|(name, text)| parse(name, text).expect("embedded guidelines are valid")).collect()
}

/// Every `*.md` in `dir`, sorted by name; `default.md` is required.
pub fn load_dir(dir: &Path) -> Result<Vec<Guideline>, GuidelineError> {
    let io = |e| GuidelineError::Io(dir.to_path_buf(), e);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(io)?;
        out.push(parse(&path.file_name().unwrap().to_string_lossy(), &text)?);
    }
    if !out.iter().any(|g| g.name == "default") {
        return Err(GuidelineError::NoDefault(dir.to_path_buf()));
    }
    Ok(out)
}

/// The guidelines in force: `explicit` dir, else `guidelines/` next to the database,
/// else the embedded set.
pub fn discover(explicit: Option<&Path>, database: &Path) -> Result<Vec<Guideline>, GuidelineError> {
    if let Some(dir) = explicit {
        return load_dir(dir);
    }
    let beside = database.parent().map(|p| p.join("guidelines")).filter(|p| p.join("default.md").is_file());
    match beside {
        Some(dir) => load_dir(&dir),
        None => Ok(embedded()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_guidelines_parse_with_the_full_taxonomy() {
        let all = embedded();
        let default = all.iter().find(|g| g.domain == "default").unwrap();
        let keys: Vec<&str> = default.reasons.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "factual_error",
                "hallucination",
                "unsafe",
                "noncompliance",
                "terminology",
                "tone",
                "formatting",
                "verbosity",
                "language",
                "incomplete"
            ]
        );
        assert!(all.iter().any(|g| g.domain == "banking"));
        assert!(default.body().starts_with("\n# Reviewer guidelines") || default.body().starts_with("# Reviewer"));
    }

    #[test]
    fn rejects_missing_front_matter_and_duplicate_shortcuts() {
        assert!(parse("x.md", "# no front matter").is_err());
        let dup = "+++\ntitle=\"t\"\ndomain=\"d\"\n[[reasons]]\nkey=\"a\"\nlabel=\"A\"\nshortcut=\"f\"\ndescription=\"\"\n[[reasons]]\nkey=\"b\"\nlabel=\"B\"\nshortcut=\"f\"\ndescription=\"\"\n+++\nbody";
        let err = parse("x.md", dup).unwrap_err().to_string();
        assert!(err.contains("used twice"), "{err}");
    }

    #[test]
    fn a_folder_overrides_the_embedded_set() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("guidelines")).unwrap();
        std::fs::write(
            dir.path().join("guidelines/default.md"),
            "+++\ntitle=\"Ours\"\ndomain=\"default\"\n+++\nBe kind.\n",
        )
        .unwrap();
        let db = dir.path().join("v.db");
        let found = discover(None, &db).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].title, "Ours");
        assert_eq!(found[0].body(), "Be kind.\n");
    }
}
