//! The sha256 of a model's weight files (its id in the store), remembered between runs.
//!
//! Hashing is the slowest part of opening a large model: 6.4 GB of Llama-3.2-3B weights took
//! about 16 CPU-seconds, 9% of a three-step training run (`perf record`, docs/performance.md),
//! paid again by every run and every generation job. The hash of a large file is kept in the
//! cache directory under a name derived from its path, with the file's size, modification time
//! and inode; it is used only while all three still match, so a file rewritten or replaced is
//! hashed again. The cache is an optimisation: when it cannot be read or written, the file is
//! hashed as before.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::error::Result;
use super::fetch::{cache_dir, sha256_file};

/// Files smaller than this are hashed every time (a fraction of a second).
const REMEMBER_FROM_BYTES: u64 = 64 << 20;

/// Hex sha256 of the file at `path`, from the cache when the file has not changed since.
pub fn sha256_remembered(path: &Path) -> Result<String> {
    let dir = cache_dir().ok().map(|d| d.join("file-hashes"));
    sha256_with_cache(path, dir.as_deref(), REMEMBER_FROM_BYTES)
}

/// What identifies a version of the file: size, modification time (ns) and inode.
fn stamp(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let modified = meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos();
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0u64;
    Some(format!("{} {modified} {inode}", meta.len()))
}

fn sha256_with_cache(path: &Path, cache: Option<&Path>, from_bytes: u64) -> Result<String> {
    let large = std::fs::metadata(path).is_ok_and(|m| m.len() >= from_bytes);
    let (Some(cache), true, Some(before)) = (cache, large, stamp(path)) else { return sha256_file(path) };
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let entry = cache.join(&hex::encode(Sha256::digest(canonical.to_string_lossy().as_bytes()))[..32]);
    if let Some(hash) = std::fs::read_to_string(&entry).ok().and_then(|text| {
        let (kept_stamp, hash) = text.trim_end().rsplit_once(' ')?;
        (kept_stamp == before && hash.len() == 64).then(|| hash.to_string())
    }) {
        return Ok(hash);
    }
    let hash = sha256_file(path)?;
    // Kept only when the file did not change while it was read.
    if stamp(path).as_deref() == Some(before.as_str()) {
        let tmp = entry.with_extension(format!("tmp{}", std::process::id()));
        let written = std::fs::create_dir_all(cache)
            .and_then(|()| std::fs::write(&tmp, format!("{before} {hash}\n")))
            .and_then(|()| std::fs::rename(&tmp, &entry));
        if let Err(e) = written {
            tracing::debug!("not remembering the hash of {}: {e}", path.display());
            let _ = std::fs::remove_file(&tmp);
        }
    }
    Ok(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_hash_is_reused_only_while_the_file_is_unchanged() -> Result<()> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (file, cache) = (tmp.path().join("w.bin"), tmp.path().join("hashes"));
        std::fs::write(&file, b"first version").expect("write");
        let first = sha256_with_cache(&file, Some(&cache), 1)?;
        assert_eq!(first, sha256_file(&file)?);
        let entries: Vec<_> = std::fs::read_dir(&cache).expect("cache written").collect();
        assert_eq!(entries.len(), 1);
        let entry = entries[0].as_ref().expect("entry").path();
        // A planted hash is what proves the cache is read while the stamp matches.
        let text = std::fs::read_to_string(&entry).expect("entry");
        std::fs::write(&entry, text.replace(&first, &"0".repeat(64))).expect("plant");
        assert_eq!(sha256_with_cache(&file, Some(&cache), 1)?, "0".repeat(64));
        // Rewritten, same size, another modification time: hashed again, and the cache updated.
        std::fs::write(&file, b"other version").expect("rewrite");
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options().write(true).open(&file).expect("open").set_modified(later).expect("mtime");
        let second = sha256_with_cache(&file, Some(&cache), 1)?;
        assert_eq!(second, sha256_file(&file)?);
        assert_ne!(second, first);
        assert!(std::fs::read_to_string(&entry).expect("entry").ends_with(&format!("{second}\n")));
        // A garbled entry, a small file, or no cache at all: hashed as before.
        std::fs::write(&entry, "garbage").expect("garble");
        assert_eq!(sha256_with_cache(&file, Some(&cache), 1)?, second);
        assert_eq!(sha256_with_cache(&file, Some(&cache), 1 << 30)?, second);
        assert_eq!(sha256_with_cache(&file, None, 1)?, second);
        Ok(())
    }
}
