//! End-to-end tests of finding the user's models: `verdict model list` and `verdict model info
//! NAME` with Ollama's and the Hugging Face cache's folders in a temporary home.

use std::path::Path;
use std::process::{Command, Output};

const QWEN3: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/families/qwen3");

/// A home with an Ollama store (manifest and blob as `ollama pull` writes them) and a Hugging
/// Face cache snapshot, both of the qwen3 fixture.
fn fake_home(home: &Path) {
    let ollama = home.join("ollama-models");
    let hex = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
    std::fs::create_dir_all(ollama.join("blobs")).unwrap();
    std::fs::copy(Path::new(QWEN3).join("model.gguf"), ollama.join("blobs").join(format!("sha256-{hex}"))).unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
        "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:{z}","size":10}},
        "layers":[{{"mediaType":"application/vnd.ollama.image.model","digest":"sha256:{hex}","size":214176}},
        {{"mediaType":"application/vnd.ollama.image.template","digest":"sha256:{z}","size":10}}]}}"#,
        z = "0".repeat(64)
    );
    let dir = ollama.join("manifests/registry.ollama.ai/library/qwen3-tiny");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("latest"), manifest).unwrap();
    let snap = home.join("hub/models--tiny-org--qwen3-tiny/snapshots/abc123");
    std::fs::create_dir_all(&snap).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(Path::new(QWEN3).join(f), snap.join(f)).unwrap();
    }
}

fn verdict(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_verdict"))
        .arg("--db")
        .arg(home.join("no.db"))
        .args(args)
        .env("HOME", home)
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("OLLAMA_MODELS", home.join("ollama-models"))
        .env("HF_HUB_CACHE", home.join("hub"))
        .env_remove("VERDICT_MODEL")
        .env_remove("LLAMA_CACHE")
        .env_remove("HF_HOME")
        .output()
        .unwrap()
}

fn ok(home: &Path, args: &[&str]) -> String {
    let out = verdict(home, args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{args:?}: {text}\n{}", String::from_utf8_lossy(&out.stderr));
    text
}

#[test]
fn model_list_and_info_find_ollama_and_hf_cache_models_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    fake_home(home);
    let list = ok(home, &["model", "list"]);
    let row =
        |name: &str| list.lines().find(|l| l.contains(name)).unwrap_or_else(|| panic!("{name}: {list}")).to_string();
    let ollama = row("qwen3-tiny:latest");
    assert!(ollama.contains("ollama") && ollama.contains("qwen3") && ollama.contains("sha256-a1b2"), "{ollama}");
    let hf = row("tiny-org/qwen3-tiny");
    assert!(hf.contains("hf-cache") && hf.contains("qwen3"), "{hf}");

    for name in ["qwen3-tiny:latest", "qwen3-tiny", "tiny-org/qwen3-tiny"] {
        let info = ok(home, &["model", "info", name]);
        assert!(info.contains("as family qwen3"), "{name}: {info}");
        assert!(info.contains("training (full and LoRA)") && info.contains("runs as"), "{name}: {info}");
    }
    let out = verdict(home, &["model", "info", "qwen"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an unknown name is an error");
    assert!(err.contains("qwen3-tiny:latest (ollama)") && err.contains("tiny-org/qwen3-tiny (hf-cache)"), "{err}");
}
