//! Running the `verdict` binary as a named annotator, for the team tests (`cli_team.rs`,
//! `cli_thumbs.rs`): each annotator works in their own database.

use std::path::Path;
use std::process::{Command, Output};

/// `verdict --db DB ARGS…` as `annotator`.
pub fn verdict(db: &Path, annotator: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_verdict"))
        .env("VERDICT_ANNOTATOR", annotator)
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .unwrap()
}

/// The same, which must succeed; returns its stdout.
pub fn ok(db: &Path, annotator: &str, args: &[&str]) -> String {
    let out = verdict(db, annotator, args);
    assert!(out.status.success(), "verdict {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}
