//! Bad input gives a clear `ModelError`, never a panic; and the Jinja compatibility helpers.

use super::tests_tiny::tiny_paths;
use super::*;

fn cpu() -> LoadOptions {
    LoadOptions { device: DeviceChoice::Cpu, ..LoadOptions::default() }
}

fn load_err(path: &Path) -> ModelError {
    Model::load(path, &cpu()).expect_err("load must fail")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn missing_path_is_not_found() {
    let err = load_err(Path::new("/nonexistent/model.gguf"));
    assert!(matches!(err, ModelError::NotFound(_)), "{err}");
    assert!(err.to_string().contains("/nonexistent/model.gguf"));
    let err = resolve_with(Some(Path::new("/nope")), None, &|_| {}).unwrap_err();
    assert!(matches!(err, ModelError::NotFound(_)));
    let env = resolve_with(None, Some(tiny_paths().0.clone()), &|_| {}).unwrap();
    assert_eq!(env, tiny_paths().0);
}

#[test]
fn truncated_and_foreign_files_are_bad_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(&tiny_paths().0).unwrap();
    for (name, data) in [
        ("truncated.gguf", &bytes[..bytes.len() / 2]),
        ("header-only.gguf", &bytes[..40]),
        ("text.gguf", b"this is not a model at all".as_slice()),
        ("empty.gguf", b"".as_slice()),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, data).unwrap();
        let err = load_err(&path);
        assert!(matches!(err, ModelError::BadGguf { .. }), "{name}: {err}");
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[test]
fn unsupported_architecture_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("gpt2");
    copy_dir(&tiny_paths().1, &hf);
    let cfg = std::fs::read_to_string(hf.join("config.json")).unwrap().replace("LlamaForCausalLM", "GPT2LMHeadModel");
    std::fs::write(hf.join("config.json"), cfg).unwrap();
    let err = load_err(&hf);
    assert!(matches!(err, ModelError::UnsupportedArchitecture { ref arch, .. } if arch == "GPT2LMHeadModel"), "{err}");
    assert!(err.to_string().contains("Qwen2"));
}

#[test]
fn hf_dir_without_tokenizer_or_config_or_weights() {
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("m");
    copy_dir(&tiny_paths().1, &hf);
    std::fs::remove_file(hf.join("tokenizer.json")).unwrap();
    assert!(matches!(load_err(&hf), ModelError::MissingTokenizer { .. }));

    let hf2 = dir.path().join("m2");
    copy_dir(&tiny_paths().1, &hf2);
    std::fs::remove_file(hf2.join("model.safetensors")).unwrap();
    let err = load_err(&hf2);
    assert!(matches!(err, ModelError::BadHfDir { .. }), "{err}");

    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = load_err(&empty);
    assert!(matches!(err, ModelError::BadHfDir { .. }), "{err}");
    assert!(err.to_string().contains("config.json"));
}

#[test]
fn bad_device_and_params_are_explained() {
    assert_eq!("cuda:1".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(1));
    assert_eq!("CPU".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
    assert!("tpu".parse::<DeviceChoice>().is_err());
    if !candle_core::utils::cuda_is_available() {
        let opts = LoadOptions { device: DeviceChoice::Cuda(0), ..cpu() };
        let err = Model::load(&tiny_paths().0, &opts).unwrap_err();
        assert!(matches!(err, ModelError::DeviceUnavailable(_)), "{err}");
        assert!(err.to_string().contains("--features cuda"), "{err}");
        assert_eq!(DeviceChoice::Auto.device().map(|d| crate::model::device_label(&d)).unwrap(), "cpu");
    }
    assert_eq!(crate::model::device_label(&candle_core::Device::Cpu), "cpu");
    assert!(GenerateParams { candidates: 0, ..Default::default() }.validate().is_err());
    assert!(GenerateParams { temperature: -1.0, ..Default::default() }.validate().is_err());
    assert!(GenerateParams::default().validate().is_ok());
}

fn render(template: &str, messages: &[ChatMessage]) -> Result<String> {
    let special = SpecialTokens { bos: Some("<s>".into()), eos: Some("</s>".into()), ..Default::default() };
    ChatTemplate::new(template, &special)?.render(messages, true)
}

#[test]
fn jinja_helpers_behave_like_transformers() {
    let msgs = vec![ChatMessage::new("system", "  Be nice.  "), ChatMessage::new("user", "hi <b>&</b>")];
    // Expected strings below are Jinja2's output under transformers' settings.
    // trim_blocks + lstrip_blocks, loop controls, bos_token, python string methods.
    let t = "{{ bos_token }}\n{% for m in messages %}\n  {% if m.role == 'system' %}{% continue %}{% endif %}\n[{{ m['content'].strip().upper() }}]\n{% endfor %}";
    assert_eq!(render(t, &msgs).unwrap(), "<s>\n[HI <B>&</B>]\n");
    // tojson: Python separators, key order as given, no HTML escaping.
    assert_eq!(render("{{ messages[1] | tojson }}", &msgs).unwrap(), r#"{"role": "user", "content": "hi <b>&</b>"}"#);
    assert_eq!(
        render("{{ messages[0].content.startswith('  Be') }}|{{ 'a,b'.split(',') }}", &msgs).unwrap(),
        "True|['a', 'b']"
    );
    let indented = "{{ {'x': 1.0, 'y': [1e-5, None, True]} | tojson(indent=2) }}";
    assert_eq!(
        render(indented, &msgs).unwrap(),
        "{\n  \"x\": 1.0,\n  \"y\": [\n    1e-05,\n    null,\n    true\n  ]\n}"
    );
    // raise_exception surfaces the template's own message.
    let err = render("{{ raise_exception('Only user and assistant roles are supported!') }}", &msgs).unwrap_err();
    assert!(err.to_string().contains("Only user and assistant roles are supported!"), "{err}");
    // {% generation %} blocks render their body.
    assert_eq!(render("{% generation %}x{% endgeneration %}", &msgs).unwrap(), "x");
    let no_template = ChatTemplate::new("", &SpecialTokens::default()).unwrap();
    assert!(matches!(no_template.render(&msgs, true), Err(ModelError::ChatTemplate(_))));
    assert!(matches!(render("{% if %}", &msgs), Err(ModelError::ChatTemplate(_))));
}

#[test]
fn strftime_formats_dates() {
    // 2026-11-27 13:05:09 UTC, a Friday.
    let t = 1_795_784_709;
    assert_eq!(jinja_compat::strftime_utc("%d %b %Y", t), "27 Nov 2026");
    assert_eq!(jinja_compat::strftime_utc("%A %B %-d, %H:%M:%S", t), "Friday November 27, 13:05:09");
}
