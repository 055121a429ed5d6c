//! End-to-end tests of finding the user's models: `verdict model list` and `verdict model info
//! NAME` with Ollama's and the Hugging Face cache's folders in a temporary home.

use std::path::Path;
use std::process::{Command, Output};

const QWEN3: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/families/qwen3");

/// A home with an Ollama store (manifest and blob as `ollama pull` writes them) and a Hugging
/// Face cache snapshot, both of the qwen3 fixture.
fn fake_home(home: &Path) {
    let hex = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
    add_ollama_model(home, "qwen3-tiny", &Path::new(QWEN3).join("model.gguf"), hex);
    let snap = home.join("hub/models--tiny-org--qwen3-tiny/snapshots/abc123");
    std::fs::create_dir_all(&snap).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"] {
        std::fs::copy(Path::new(QWEN3).join(f), snap.join(f)).unwrap();
    }
}

/// `gguf` in the home's Ollama store as `ollama pull` leaves a model: its blob under
/// `blobs/sha256-<hex>`, named by a manifest under `manifests/registry.ollama.ai/library/NAME`.
fn add_ollama_model(home: &Path, name: &str, gguf: &Path, hex: &str) {
    let ollama = home.join("ollama-models");
    std::fs::create_dir_all(ollama.join("blobs")).unwrap();
    std::fs::copy(gguf, ollama.join("blobs").join(format!("sha256-{hex}"))).unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
        "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:{z}","size":10}},
        "layers":[{{"mediaType":"application/vnd.ollama.image.model","digest":"sha256:{hex}","size":214176}},
        {{"mediaType":"application/vnd.ollama.image.template","digest":"sha256:{z}","size":10}}]}}"#,
        z = "0".repeat(64)
    );
    let dir = ollama.join("manifests/registry.ollama.ai/library").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("latest"), manifest).unwrap();
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

/// Every command that takes a model takes its name: `logps --model/--ref` and `export --ollama
/// --model` find an Ollama blob (no .gguf extension: its magic says GGUF) and a hub-cache folder.
#[test]
fn logps_and_the_ollama_export_take_model_names() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    fake_home(home);
    let pairs = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/logps/pairs.jsonl");
    let by_path = ok(home, &["logps", "--model", QWEN3, "--max-length", "128", pairs]);
    let by_name =
        ok(home, &["logps", "--model", "tiny-org/qwen3-tiny", "--ref", "qwen3-tiny", "--max-length", "128", pairs]);
    assert_eq!(by_path.lines().count(), 9, "{by_path}");
    for (path_line, name_line) in by_path.lines().zip(by_name.lines()) {
        let (a, b): (serde_json::Value, serde_json::Value) =
            (serde_json::from_str(path_line).unwrap(), serde_json::from_str(name_line).unwrap());
        assert_eq!(a["logps/chosen"], b["logps/chosen"], "the hub-cache copy is the same model");
        // The Ollama blob is the same weights as GGUF: the reference agrees with the policy.
        let diff = b["logps/chosen"].as_f64().unwrap() - b["ref_logps/chosen"].as_f64().unwrap();
        assert!(diff.abs() <= 1e-3 * a["logps/chosen"].as_f64().unwrap().abs().max(1.0), "{name_line}");
    }
    // Qwen3's template drops earlier turns' reasoning, which Ollama's templates cannot say;
    // Qwen2's ChatML they can.
    let qwen2 = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/families/qwen2/model.gguf");
    add_ollama_model(home, "qwen2-tiny", &qwen2, &"c0ffee00".repeat(8));
    let out = home.join("exported");
    let export = verdict(home, &["export", "--ollama", out.to_str().unwrap(), "--model", "qwen2-tiny"]);
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    // The blob is copied under a GGUF's name, and the Modelfile points at it.
    assert_eq!(std::fs::read(out.join("model.gguf")).unwrap(), std::fs::read(&qwen2).unwrap());
    let modelfile = std::fs::read_to_string(out.join("Modelfile")).unwrap();
    assert!(modelfile.contains("FROM ./model.gguf") && modelfile.contains("<|im_start|>"), "{modelfile}");
    let unknown = verdict(home, &["logps", "--model", QWEN3, "--ref", "no-such-model", pairs]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no-such-model"));
}
