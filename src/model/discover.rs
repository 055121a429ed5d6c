//! Finds the GGUF files and Hugging Face folders the user already has on disk — the Hugging Face
//! hub cache, llama.cpp's cache, Ollama's blob store (read through its manifests, so a model has
//! its Ollama name) and LM Studio's models folder — without copying or reading weights, and
//! resolves `--model NAME` to one of them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Where a found model lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    HfCache,
    LlamaCpp,
    Ollama,
    LmStudio,
}

impl Source {
    /// The label `verdict model list` shows.
    pub fn label(self) -> &'static str {
        match self {
            Source::HfCache => "hf-cache",
            Source::LlamaCpp => "llama.cpp",
            Source::Ollama => "ollama",
            Source::LmStudio => "lm-studio",
        }
    }
}

/// A model found on disk: its name for `--model` and the GGUF file or HF folder it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub source: Source,
    /// `org/name` (hub cache), `org/name/file` (a GGUF in the hub cache), the file's stem
    /// (llama.cpp), `name:tag` as Ollama shows it, `publisher/repo/file` (LM Studio).
    pub name: String,
    pub path: PathBuf,
}

/// The folders searched, from the environment as each tool reads it.
#[derive(Debug, Clone)]
pub struct Roots {
    pub hf_hub: Option<PathBuf>,
    pub llama_cpp: Option<PathBuf>,
    pub ollama: Option<PathBuf>,
    pub lm_studio: Vec<PathBuf>,
}

impl Roots {
    /// From this process's environment.
    pub fn from_env() -> Roots {
        Roots::with(|key| std::env::var_os(key))
    }

    /// From `get` (an environment lookup): `HF_HUB_CACHE`, else `HF_HOME/hub`, else
    /// `$XDG_CACHE_HOME/huggingface/hub` or `~/.cache/huggingface/hub`; `LLAMA_CACHE`, else
    /// `~/.cache/llama.cpp`; `OLLAMA_MODELS`, else `~/.ollama/models`; `~/.lmstudio/models` and
    /// `~/.cache/lm-studio/models`.
    pub fn with(get: impl Fn(&str) -> Option<OsString>) -> Roots {
        let var = |key: &str| get(key).filter(|v| !v.is_empty()).map(PathBuf::from);
        let home = var("HOME").or_else(|| var("USERPROFILE"));
        let cache = var("XDG_CACHE_HOME").or_else(|| home.as_ref().map(|h| h.join(".cache")));
        let hf_hub = var("HF_HUB_CACHE")
            .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
            .or_else(|| cache.as_ref().map(|c| c.join("huggingface").join("hub")));
        let llama_cpp = var("LLAMA_CACHE").or_else(|| cache.as_ref().map(|c| c.join("llama.cpp")));
        let ollama = var("OLLAMA_MODELS").or_else(|| home.as_ref().map(|h| h.join(".ollama").join("models")));
        let lm_studio = match &home {
            Some(h) => vec![h.join(".lmstudio").join("models"), h.join(".cache").join("lm-studio").join("models")],
            None => Vec::new(),
        };
        Roots { hf_hub, llama_cpp, ollama, lm_studio }
    }

    /// Every folder searched, for messages.
    pub fn describe(&self) -> String {
        let mut all: Vec<&PathBuf> = [&self.hf_hub, &self.llama_cpp, &self.ollama].into_iter().flatten().collect();
        all.extend(&self.lm_studio);
        all.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    }
}

/// Every model under `roots`, sorted by source and name. Unreadable folders and files that are
/// not models are skipped: a missing tool is the common case.
pub fn discover(roots: &Roots) -> Vec<Found> {
    let mut found = Vec::new();
    if let Some(hub) = &roots.hf_hub {
        hf_cache(hub, &mut found);
    }
    if let Some(dir) = &roots.llama_cpp {
        for file in gguf_files(dir) {
            push(&mut found, Source::LlamaCpp, stem(&file), file);
        }
    }
    if let Some(dir) = &roots.ollama {
        ollama(dir, &mut found);
    }
    let mut seen = std::collections::HashSet::new();
    for root in roots.lm_studio.iter().filter(|r| seen.insert(r.canonicalize().unwrap_or_else(|_| (*r).clone()))) {
        for publisher in subdirs(root) {
            for repo in subdirs(&publisher) {
                for file in gguf_files(&repo) {
                    let name = format!("{}/{}/{}", file_name(&publisher), file_name(&repo), stem(&file));
                    push(&mut found, Source::LmStudio, name, file);
                }
            }
        }
    }
    found.sort_by(|a, b| (a.source, &a.name).cmp(&(b.source, &b.name)));
    found
}

/// The model called `name` among `found`: an exact name, or an Ollama name without its tag
/// meaning `:latest` as in Ollama. An error lists the candidates.
pub fn find<'a>(name: &str, found: &'a [Found]) -> Result<&'a Found, String> {
    let exact: Vec<&Found> = found.iter().filter(|f| f.name == name).collect();
    let matches = match exact.is_empty() && !name.contains(':') {
        true => found.iter().filter(|f| f.source == Source::Ollama && f.name == format!("{name}:latest")).collect(),
        false => exact,
    };
    match matches.as_slice() {
        [one] => Ok(one),
        [] => {
            let lower = name.to_lowercase();
            let close: Vec<&Found> = found.iter().filter(|f| f.name.to_lowercase().contains(&lower)).collect();
            let list = if close.is_empty() { found.iter().collect() } else { close };
            Err(match list.is_empty() {
                true => "no models were found on disk".to_string(),
                false => format!("models found on disk: {}", names(&list)),
            })
        }
        many => Err(format!("{} models have that name, pass one's path instead: {}", many.len(), paths(many))),
    }
}

fn names(list: &[&Found]) -> String {
    let mut out: Vec<String> = list.iter().take(20).map(|f| format!("{} ({})", f.name, f.source.label())).collect();
    if list.len() > 20 {
        out.push(format!("… {} more (`verdict model list`)", list.len() - 20));
    }
    out.join(", ")
}

fn paths(list: &[&Found]) -> String {
    list.iter().map(|f| format!("{} ({})", f.path.display(), f.source.label())).collect::<Vec<_>>().join(", ")
}

fn push(found: &mut Vec<Found>, source: Source, name: String, path: PathBuf) {
    found.push(Found { source, name, path });
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn stem(p: &Path) -> String {
    p.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    entries(dir).into_iter().filter(|p| p.is_dir()).collect()
}

/// `*.gguf` files directly in `dir`, without vision projectors (`mmproj-*`), which are no
/// language model.
fn gguf_files(dir: &Path) -> Vec<PathBuf> {
    entries(dir)
        .into_iter()
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")))
        .filter(|p| !file_name(p).to_lowercase().starts_with("mmproj"))
        .collect()
}

/// `models--org--name/snapshots/<rev>/`: the revision `refs/main` names, else the newest
/// snapshot; a folder with config.json and *.safetensors is `org/name`, each GGUF in it
/// `org/name/file`.
fn hf_cache(hub: &Path, found: &mut Vec<Found>) {
    for repo in subdirs(hub) {
        let Some(id) = file_name(&repo).strip_prefix("models--").map(|s| s.replace("--", "/")) else { continue };
        let snapshots = repo.join("snapshots");
        let main = std::fs::read_to_string(repo.join("refs").join("main")).ok().map(|s| snapshots.join(s.trim()));
        let snapshot = match main.filter(|p| p.is_dir()) {
            Some(p) => p,
            None => {
                let newest = subdirs(&snapshots).into_iter().max_by_key(|p| {
                    std::fs::metadata(p).and_then(|m| m.modified()).unwrap_or(std::time::SystemTime::UNIX_EPOCH)
                });
                let Some(p) = newest else { continue };
                p
            }
        };
        let has_safetensors = entries(&snapshot).iter().any(|p| p.extension().is_some_and(|e| e == "safetensors"));
        if snapshot.join("config.json").is_file() && has_safetensors {
            push(found, Source::HfCache, id.clone(), snapshot.clone());
        }
        for file in gguf_files(&snapshot) {
            push(found, Source::HfCache, format!("{id}/{}", stem(&file)), file);
        }
    }
}

const OLLAMA_MODEL_LAYER: &str = "application/vnd.ollama.image.model";

/// `manifests/<host>/<namespace>/<name>/<tag>`: the layer of type `OLLAMA_MODEL_LAYER` is the
/// GGUF at `blobs/sha256-<hex>`. Named as Ollama shows it: `name:tag` for the library,
/// `namespace/name:tag` for other namespaces there, `host/namespace/name:tag` elsewhere.
fn ollama(root: &Path, found: &mut Vec<Found>) {
    for host in subdirs(&root.join("manifests")) {
        for namespace in subdirs(&host) {
            for model in subdirs(&namespace) {
                for tag in entries(&model).into_iter().filter(|p| p.is_file()) {
                    let Some(blob) = ollama_blob(root, &tag) else { continue };
                    let (h, ns) = (file_name(&host), file_name(&namespace));
                    let base = match (h.as_str(), ns.as_str()) {
                        ("registry.ollama.ai", "library") => file_name(&model),
                        ("registry.ollama.ai", _) => format!("{ns}/{}", file_name(&model)),
                        _ => format!("{h}/{ns}/{}", file_name(&model)),
                    };
                    push(found, Source::Ollama, format!("{base}:{}", file_name(&tag)), blob);
                }
            }
        }
    }
}

fn ollama_blob(root: &Path, manifest: &Path) -> Option<PathBuf> {
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(manifest).ok()?).ok()?;
    let layer = json["layers"].as_array()?.iter().find(|l| l["mediaType"] == OLLAMA_MODEL_LAYER)?;
    let hex = layer["digest"].as_str()?.strip_prefix("sha256:")?;
    let blob = root.join("blobs").join(format!("sha256-{hex}"));
    blob.is_file().then_some(blob)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const QWEN3: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/families/qwen3");

    /// A home folder with a model in each place, as each tool lays it out.
    pub(crate) fn fake_home(home: &Path) {
        let gguf = Path::new(QWEN3).join("model.gguf");
        let copy = |to: &Path| {
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&gguf, to).unwrap();
        };
        // Hugging Face hub cache: refs/main names the snapshot; an older one is ignored.
        let repo = home.join(".cache/huggingface/hub/models--tiny-org--qwen3-tiny");
        for rev in ["0ld", "abc123"] {
            let snap = repo.join("snapshots").join(rev);
            std::fs::create_dir_all(&snap).unwrap();
            for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
                std::fs::copy(Path::new(QWEN3).join(f), snap.join(f)).unwrap();
            }
        }
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123").unwrap();
        // A dataset-like repo without weights is no model.
        std::fs::create_dir_all(home.join(".cache/huggingface/hub/models--x--empty/snapshots/1")).unwrap();
        copy(&home.join(".cache/llama.cpp/tiny-org_qwen3-tiny_model-Q8_0.gguf"));
        copy(&home.join(".cache/llama.cpp/mmproj-model-f16.gguf"));
        // Ollama: a manifest as `ollama pull` writes it, the model layer's digest naming the blob.
        let ollama = home.join(".ollama/models");
        let hex = "6f3c1a0b9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a";
        copy(&ollama.join("blobs").join(format!("sha256-{hex}")));
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "digest": "sha256:0000000000000000000000000000000000000000000000000000000000000001", "size": 485},
            "layers": [
                {"mediaType": "application/vnd.ollama.image.template",
                 "digest": "sha256:0000000000000000000000000000000000000000000000000000000000000002", "size": 1231},
                {"mediaType": "application/vnd.ollama.image.model",
                 "digest": format!("sha256:{hex}"), "size": 214176},
                {"mediaType": "application/vnd.ollama.image.params",
                 "digest": "sha256:0000000000000000000000000000000000000000000000000000000000000003", "size": 120}
            ]
        });
        for (path, tag) in [
            ("registry.ollama.ai/library/qwen3-tiny", "latest"),
            ("registry.ollama.ai/someone/qwen3-tiny", "q8"),
            ("hf.co/tiny-org/qwen3-tiny-GGUF", "Q8_0"),
        ] {
            let dir = ollama.join("manifests").join(path);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(tag), manifest.to_string()).unwrap();
        }
        // A manifest whose blob was removed is skipped.
        let gone = ollama.join("manifests/registry.ollama.ai/library/gone");
        std::fs::create_dir_all(&gone).unwrap();
        std::fs::write(gone.join("latest"), manifest.to_string().replace(hex, &"9".repeat(64))).unwrap();
        copy(&home.join(".lmstudio/models/tiny-org/qwen3-tiny-GGUF/qwen3-tiny-Q8_0.gguf"));
    }

    fn roots(home: &Path, extra: &[(&str, &Path)]) -> Roots {
        let mut env: HashMap<String, OsString> = HashMap::from([("HOME".into(), home.as_os_str().to_owned())]);
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.as_os_str().to_owned())));
        Roots::with(|k| env.get(k).cloned())
    }

    #[test]
    fn finds_models_in_each_tools_folder_by_its_name() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path();
        fake_home(home);
        let found = discover(&roots(home, &[]));
        let listed: Vec<(&str, &str)> = found.iter().map(|f| (f.source.label(), f.name.as_str())).collect();
        assert_eq!(
            listed,
            [
                ("hf-cache", "tiny-org/qwen3-tiny"),
                ("llama.cpp", "tiny-org_qwen3-tiny_model-Q8_0"),
                ("ollama", "hf.co/tiny-org/qwen3-tiny-GGUF:Q8_0"),
                ("ollama", "qwen3-tiny:latest"),
                ("ollama", "someone/qwen3-tiny:q8"),
                ("lm-studio", "tiny-org/qwen3-tiny-GGUF/qwen3-tiny-Q8_0"),
            ]
        );
        let hf = &found[0].path;
        assert!(hf.ends_with("snapshots/abc123"), "{hf:?}");
        let blob = find("qwen3-tiny:latest", &found).unwrap();
        assert!(file_name(&blob.path).starts_with("sha256-6f3c"), "{blob:?}");
        // Headers only: every one reads as the qwen3 fixture without loading weights.
        for f in &found {
            let o = super::super::overview::overview(&f.path).unwrap();
            assert_eq!(o.arch.family.name(), "qwen3", "{f:?}");
        }
    }

    #[test]
    fn environment_variables_move_each_folder() {
        let tmp = tempfile::tempdir().unwrap();
        fake_home(&tmp.path().join("elsewhere"));
        let e = tmp.path().join("elsewhere");
        let (hub, llama, ollama) =
            (e.join(".cache/huggingface/hub"), e.join(".cache/llama.cpp"), e.join(".ollama/models"));
        let empty_home = tmp.path().join("home");
        assert!(discover(&roots(&empty_home, &[])).is_empty());
        let moved = roots(&empty_home, &[("HF_HUB_CACHE", &hub), ("LLAMA_CACHE", &llama), ("OLLAMA_MODELS", &ollama)]);
        let sources: Vec<Source> = discover(&moved).iter().map(|f| f.source).collect();
        assert_eq!(sources.iter().filter(|s| **s == Source::HfCache).count(), 1);
        assert_eq!(sources.iter().filter(|s| **s == Source::LlamaCpp).count(), 1);
        assert_eq!(sources.iter().filter(|s| **s == Source::Ollama).count(), 3);
        let hf_home = roots(&empty_home, &[("HF_HOME", &e.join(".cache/huggingface"))]);
        assert_eq!(discover(&hf_home).len(), 1);
    }

    #[test]
    fn find_takes_exact_names_and_lists_candidates_otherwise() {
        let tmp = tempfile::tempdir().unwrap();
        fake_home(tmp.path());
        let found = discover(&roots(tmp.path(), &[]));
        assert_eq!(find("qwen3-tiny", &found).unwrap().name, "qwen3-tiny:latest", "Ollama's implicit :latest");
        assert_eq!(find("tiny-org/qwen3-tiny", &found).unwrap().source, Source::HfCache);
        let err = find("qwen3", &found).unwrap_err();
        assert!(err.contains("qwen3-tiny:latest (ollama)") && err.contains("tiny-org/qwen3-tiny (hf-cache)"), "{err}");
        let err = find("nothing-like-it", &found).unwrap_err();
        assert!(err.contains("someone/qwen3-tiny:q8"), "all models are candidates: {err}");
        assert_eq!(find("x", &[]).unwrap_err(), "no models were found on disk");
        let r = roots(tmp.path(), &[]);
        let path = super::super::resolve_in(Some(Path::new("qwen3-tiny:latest")), None, &r, &|_| {}).unwrap();
        assert_eq!(path, find("qwen3-tiny:latest", &found).unwrap().path);
        let env = super::super::resolve_in(None, Some("tiny-org/qwen3-tiny".into()), &r, &|_| {}).unwrap();
        assert!(env.ends_with("snapshots/abc123"), "VERDICT_MODEL takes names too: {env:?}");
        let err = super::super::resolve_in(Some(Path::new("qwen3")), None, &r, &|_| {}).unwrap_err().to_string();
        assert!(err.contains("--model qwen3 is neither") && err.contains("qwen3-tiny:latest (ollama)"), "{err}");
        let twice = [found[1].clone(), Found { source: Source::LmStudio, ..found[1].clone() }];
        let err = find(&twice[0].name, &twice).unwrap_err();
        assert!(err.starts_with("2 models have that name"), "{err}");
    }
}
