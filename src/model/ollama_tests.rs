//! Tests of the Modelfile writer: the derived Go template renders what the Jinja template does.

use super::*;
use crate::model::testing::SMOLLM2_CHAT_TEMPLATE;

fn specials(bos: &str, eos: &str) -> SpecialTokens {
    SpecialTokens { bos: Some(bos.into()), eos: Some(eos.into()), ..SpecialTokens::default() }
}

/// Conversations besides the ones `derive` checks itself.
fn more_conversations() -> Vec<Vec<ChatMessage>> {
    let m = ChatMessage::new;
    vec![
        vec![m("user", "")],
        vec![m("user", "  spaces  "), m("assistant", "ok"), m("user", "{{ not a template }}")],
        vec![
            m("system", "S"),
            m("user", "a"),
            m("assistant", "b"),
            m("user", "c"),
            m("assistant", "d"),
            m("user", "e"),
        ],
    ]
}

/// Renders like Ollama: `SYSTEM` in front of a chat without a system message.
fn ollama_render(chat: &OllamaChat, conversation: &[ChatMessage]) -> String {
    let mut messages = conversation.to_vec();
    if let Some(system) = &chat.system
        && messages.first().is_none_or(|m| m.role != "system")
    {
        messages.insert(0, ChatMessage::new("system", system.clone()));
    }
    GoTemplate::parse(&chat.template).unwrap().render(&messages, "").unwrap()
}

#[test]
fn smollm2_template_becomes_a_go_template_with_its_default_system_prompt() {
    let jinja = ChatTemplate::new(SMOLLM2_CHAT_TEMPLATE, &specials("<|im_start|>", "<|im_end|>")).unwrap();
    let chat = derive(&jinja, None, vec!["<|im_end|>".into()]).unwrap();
    assert_eq!(chat.system.as_deref(), Some("You are a helpful AI assistant named SmolLM, trained by Hugging Face"));
    assert_eq!(chat.checked, 4);
    assert!(chat.template.ends_with("{{ end }}{{ end }}<|im_start|>assistant\n"), "{}", chat.template);
    for conversation in more_conversations() {
        assert_eq!(ollama_render(&chat, &conversation), jinja.render(&conversation, true).unwrap());
    }
}

/// Llama 3's template puts BOS first; llama.cpp adds BOS itself, so the Go template must not.
#[test]
fn llama3_template_leaves_bos_to_the_tokenizer() {
    let source = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";
    let jinja = ChatTemplate::new(source, &specials("<|begin_of_text|>", "<|eot_id|>")).unwrap();
    let chat = derive(&jinja, Some("<|begin_of_text|>"), vec![]).unwrap();
    assert_eq!(chat.system, None);
    assert!(!chat.template.contains("<|begin_of_text|>"), "{}", chat.template);
    for conversation in more_conversations().into_iter().skip(2) {
        let want = jinja.render(&conversation, true).unwrap();
        assert_eq!(ollama_render(&chat, &conversation), want.strip_prefix("<|begin_of_text|>").unwrap());
    }
}

/// A template that does not wrap every message alike is refused, not approximated.
#[test]
fn a_template_it_cannot_express_is_an_error_saying_what_to_do() {
    let source = "{% for m in messages %}{% if loop.last %}[LAST]{% endif %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}";
    let jinja = ChatTemplate::new(source, &specials("<s>", "</s>")).unwrap();
    let err = derive(&jinja, None, vec![]).unwrap_err().to_string();
    assert!(err.contains("write TEMPLATE in the Modelfile by hand"), "{err}");
}

#[test]
fn the_tiny_gguf_gets_a_modelfile_with_template_system_and_stops() {
    let tmp = tempfile::tempdir().unwrap();
    let (gguf, _) = crate::model::testing::write_tiny_models(tmp.path()).unwrap();
    let chat = from_gguf(&gguf).unwrap();
    assert_eq!(chat.stops, ["<|im_end|>", "<|endoftext|>"]);
    let text = modelfile("tiny.gguf", &chat);
    assert!(text.contains("FROM ./tiny.gguf\n"), "{text}");
    assert!(text.contains("TEMPLATE \"\"\"{{ range .Messages }}{{ if eq .Role \"system\" }}<|im_start|>system\n{{ .Content }}<|im_end|>\n"), "{text}");
    assert!(text.contains("SYSTEM \"\"\"You are a helpful AI assistant named SmolLM, trained by Hugging Face\"\"\"\n"));
    assert!(text.contains("PARAMETER stop \"<|im_end|>\"\nPARAMETER stop \"<|endoftext|>\"\n"), "{text}");
}
