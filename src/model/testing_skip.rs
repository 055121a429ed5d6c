//! Skipping the real-model tests (`VERDICT_SKIP_MODEL=1`) so that a skip never reads as a pass:
//! each skipped test writes `SKIPPED <test>: <why>` to the process's standard error itself.
//!
//! libtest captures what `print!`/`eprint!` write while a test runs and shows it only for a
//! failure, so an `eprintln!` note is invisible in a plain `cargo test`. The capture is a hook in
//! those macros alone: a write through the `std::io::stderr()` handle goes straight to file
//! descriptor 2, where the user sees it beside libtest's `test … ok` line.

use super::error::Result;
use std::io::Write;
use std::path::PathBuf;

/// Whether `VERDICT_SKIP_MODEL=1` asks to skip the tests that need the real default model.
pub fn skip_requested() -> bool {
    std::env::var("VERDICT_SKIP_MODEL").is_ok_and(|v| v == "1")
}

/// The line a skipped test prints.
pub fn skipped_line(test: &str, why: &str) -> String {
    format!("SKIPPED {test}: {why}\n")
}

/// Writes `SKIPPED <test>: <why>` to the real standard error, past libtest's output capture.
pub fn report_skipped(test: &str, why: &str) {
    let mut err = std::io::stderr().lock();
    // Nothing to do if stderr is closed; the test is skipped either way.
    let _ = err.write_all(skipped_line(test, why).as_bytes()).and_then(|()| err.flush());
}

/// Skips `test` (reporting it) when `VERDICT_SKIP_MODEL=1`; returns whether it was skipped.
pub fn skip_real_model_test(test: &str) -> bool {
    let skip = skip_requested();
    if skip {
        report_skipped(test, "VERDICT_SKIP_MODEL=1 (needs the real default model)");
    }
    skip
}

/// The default model for a real-model test: its cached path, else fetched into the cache; or
/// None, reported as skipped, when it is not cached and `VERDICT_SKIP_MODEL=1`.
pub fn default_model_or_skip(test: &str) -> Result<Option<PathBuf>> {
    let path = super::fetch::default_model_path()?;
    if path.is_file() {
        return Ok(Some(path));
    }
    if skip_requested() {
        report_skipped(
            test,
            &format!("VERDICT_SKIP_MODEL=1 and the default model is not cached at {}", path.display()),
        );
        return Ok(None);
    }
    super::fetch::fetch_default(&|m| eprintln!("{m}")).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skip_names_the_test_and_the_reason_on_one_line() {
        let line = skipped_line("model::tests::x", "VERDICT_SKIP_MODEL=1");
        assert_eq!(line, "SKIPPED model::tests::x: VERDICT_SKIP_MODEL=1\n");
    }

    /// The skip line must reach file descriptor 2 while libtest captures output: run this test
    /// binary again as a child, filtered to `child_reports_a_skip`, with capture on (the
    /// default), and read the child's stderr.
    #[test]
    fn a_skip_is_printed_past_the_test_output_capture() {
        let exe = std::env::current_exe().expect("the test binary's path");
        let out = std::process::Command::new(exe)
            .args(["--exact", "model::testing_skip::tests::child_reports_a_skip", "--include-ignored"])
            .env("VERDICT_SKIP_CHILD", "1")
            .env("VERDICT_SKIP_MODEL", "1")
            .output()
            .expect("the test binary runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}{stderr}");
        assert!(stdout.contains("1 passed"), "the child ran the test: {stdout}");
        assert!(stderr.contains("SKIPPED child_reports_a_skip: VERDICT_SKIP_MODEL=1"), "stderr: {stderr:?}");
        assert!(!stderr.contains("captured note"), "eprintln! is captured, so stays hidden: {stderr:?}");
    }

    /// Run only by `a_skip_is_printed_past_the_test_output_capture`, as its child.
    #[test]
    #[ignore = "run as a child process by a_skip_is_printed_past_the_test_output_capture"]
    fn child_reports_a_skip() {
        if std::env::var_os("VERDICT_SKIP_CHILD").is_none() {
            return;
        }
        eprintln!("captured note");
        assert!(skip_real_model_test("child_reports_a_skip"));
    }
}

/// The Python of a peer venv — `$env_var`, else `default_venv` under the crate — when `check`
/// (Python source) runs there; otherwise why not, naming `what` it needs and the `setup` script
/// that makes such a venv, for `report_skipped`.
pub fn peer_python(
    env_var: &str,
    default_venv: &str,
    check: &str,
    what: &str,
    setup: &str,
) -> std::result::Result<PathBuf, String> {
    let venv = std::env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(default_venv));
    let python = venv.join("bin/python");
    let ok = std::process::Command::new(&python).args(["-c", check]).output().is_ok_and(|o| o.status.success());
    if ok {
        Ok(python)
    } else {
        Err(format!("no Python with {what} at {} (set {env_var} to such a venv; {setup} makes one)", python.display()))
    }
}
