//! The chat templates the families ship (tests/fixtures/chat_templates/*.jinja: Qwen2.5, Qwen3,
//! Llama 3.2, Mistral Nemo, Gemma 2 and 3, Phi-3.5, Phi-4) render byte-identically to
//! transformers' `apply_chat_template` (`scripts/make_chat_template_fixtures.py`), through every
//! branch the fixture walks: system prompts, multilingual turns, add_generation_prompt on and
//! off, Qwen3's thinking and tool branches, Llama's tools and date, and the templates' own errors.

use super::chat_template::{ChatTemplate, json_value};
use super::info::SpecialTokens;
use super::jinja_compat::strftime_utc;
use minijinja::Value;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat_templates")
}

fn template(name: &str, case: &serde_json::Value) -> ChatTemplate {
    let source = std::fs::read_to_string(dir().join(format!("{name}.jinja"))).unwrap();
    let token = |key: &str| case[key].as_str().map(str::to_string);
    let special = SpecialTokens { bos: token("bos_token"), eos: token("eos_token"), ..Default::default() };
    ChatTemplate::from_model(&source, &special, &format!("{name}.jinja")).unwrap()
}

fn today() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    strftime_utc("%d %b %Y", now)
}

#[test]
fn family_templates_render_like_transformers() {
    let text = std::fs::read_to_string(dir().join("reference.json")).unwrap();
    let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = reference["cases"].as_array().unwrap();
    let mut wrong = Vec::new();
    let mut templates = std::collections::BTreeSet::new();
    for case in cases {
        let name = case["template"].as_str().unwrap();
        templates.insert(name);
        let label = format!("{name} / {} / add_generation_prompt {}", case["name"], case["add_generation_prompt"]);
        let messages = json_value(case["messages"].as_str().unwrap()).unwrap();
        let variables = json_value(case["variables"].as_str().unwrap()).unwrap();
        let extra: Vec<(String, Value)> =
            variables.try_iter().unwrap().map(|k| (k.to_string(), variables.get_item(&k).unwrap())).collect();
        let got = template(name, case).render_with(messages, case["add_generation_prompt"].as_bool().unwrap(), extra);
        match (got, case.get("text").and_then(|t| t.as_str()), case.get("error").and_then(|e| e.as_str())) {
            (Ok(got), Some(want), _) => {
                let got = got.replace(&today(), "<today>");
                if got != want {
                    wrong.push(format!("{label}:\n  got  {got:?}\n  want {want:?}"));
                }
            }
            (Err(e), _, Some(want)) => {
                let e = e.to_string();
                if !e.contains(want) || !e.contains(&format!("{name}.jinja")) {
                    wrong.push(format!("{label}: error {e:?} should name the file and say {want:?}"));
                }
            }
            (Ok(got), None, Some(want)) => {
                wrong.push(format!("{label}: rendered {got:?}, transformers raised {want:?}"))
            }
            (Err(e), Some(_), _) => wrong.push(format!("{label}: {e}")),
            (_, None, None) => panic!("{label}: the case has neither text nor error"),
        }
    }
    assert!(wrong.is_empty(), "{} of {} renders differ:\n{}", wrong.len(), cases.len(), wrong.join("\n"));
    let want = ["gemma2", "gemma3", "llama3.2", "mistral-nemo", "phi3.5", "phi4", "qwen2.5", "qwen3"];
    assert_eq!(templates.into_iter().collect::<Vec<_>>(), want);
}

/// Key order survives the JSON → template value conversion (Python keeps insertion order).
#[test]
fn json_values_keep_key_order() {
    let t = ChatTemplate::new("{{ messages | tojson }}", &SpecialTokens::default()).unwrap();
    let messages = json_value(r#"[{"z": 1, "a": {"y": 2.5, "b": [true, null]}}]"#).unwrap();
    assert_eq!(
        t.render_with(messages, false, Vec::new()).unwrap(),
        r#"[{"z": 1, "a": {"y": 2.5, "b": [true, null]}}]"#
    );
}

/// A template that does not compile is reported with the model file it came from.
#[test]
fn a_broken_template_names_the_model_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_, hf) = super::testing::write_tiny_models(dir.path()).unwrap();
    let config_path = hf.join("tokenizer_config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["chat_template"] = "{% for m in messages %}{{ m.content }".into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    let opts = super::LoadOptions { device: super::DeviceChoice::Cpu, ..Default::default() };
    let err = super::Model::load(&hf, &opts).unwrap_err().to_string();
    assert!(err.contains(&config_path.display().to_string()) && err.contains("does not compile"), "{err}");
}
