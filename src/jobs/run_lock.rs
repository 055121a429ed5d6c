//! An OS file lock on `<run folder>/LOCK`, held by the process that trains the run: a second
//! process resuming the same run is refused with a clear message, and a run left `running` with
//! no holder was left by a crash (the OS drops the lock with the process) and may be resumed.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file's name in a run folder.
pub const LOCK_FILE: &str = "LOCK";

/// Held while a process trains a run; dropping it (or the process ending) releases the lock.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    pub path: PathBuf,
}

impl RunLock {
    /// Takes the lock of the run folder `dir` (created if missing) for run `run_id` (`None`: a
    /// new run, taken before its row exists), or says which process holds it.
    pub fn acquire(dir: &Path, run_id: Option<i64>) -> anyhow::Result<RunLock> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create the run folder {}: {e}; pass another --out", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() { "another process".to_string() } else { format!("process {holder}") };
                let what = match run_id {
                    Some(id) => format!("run {id} is being trained by {who}"),
                    None => format!("{who} trains a run into {}", dir.display()),
                };
                anyhow::bail!(
                    "{what} ({} is locked): stop it first (`s` on the TUI's runs screen), or wait for it to end{}",
                    path.display(),
                    if run_id.is_none() { ", or pass another --out" } else { "" }
                );
            }
            Err(TryLockError::Error(e)) => anyhow::bail!("cannot lock {}: {e}", path.display()),
        }
        // Who holds it, for the message above; the lock itself is the OS's.
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        file.flush()?;
        Ok(RunLock { _file: file, path })
    }
}

/// Whether some process (this one included) holds the lock of run folder `dir` now.
pub fn is_held(dir: &Path) -> bool {
    let Ok(file) = File::open(dir.join(LOCK_FILE)) else { return false };
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        assert!(!is_held(&run));
        let first = RunLock::acquire(&run, Some(7)).unwrap();
        assert!(is_held(&run));
        let error = RunLock::acquire(&run, Some(7)).unwrap_err().to_string();
        assert!(error.contains("run 7 is being trained by process") && error.contains("LOCK"), "{error}");
        drop(first);
        assert!(!is_held(&run), "released with its holder");
        RunLock::acquire(&run, Some(7)).unwrap();
    }
}
