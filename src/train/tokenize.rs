//! TRL's tokenization of a preference pair, with the inference model's tokenizer and template.
//!
//! prompt = the chat template over the messages with the generation prompt; each response =
//! what the template renders for the assistant turn after that (render(messages + answer)
//! minus the prompt text), e.g. for ChatML `answer<|im_end|>\n`. Prompt and response are
//! tokenized separately without added special tokens, as TRL 1.16 does. See docs/training.md.

use crate::model::{ChatMessage, Model as InferenceModel};

use super::step::PairIds;

/// The text the template renders for the assistant turn `answer` after `messages`'
/// generation prompt; an error if the template does not render the prompt as a prefix.
pub fn response_text(
    m: &InferenceModel,
    messages: &[ChatMessage],
    answer: &str,
) -> crate::model::Result<(String, String)> {
    let prompt = m.render_chat(messages, true)?;
    let mut full_msgs = messages.to_vec();
    full_msgs.push(ChatMessage::new("assistant", answer));
    let full = m.render_chat(&full_msgs, false)?;
    let Some(resp) = full.strip_prefix(&prompt) else {
        return Err(crate::model::ModelError::ChatTemplate(format!(
            "{}: the chat template does not render the generation prompt as a prefix of the answered \
             chat, so the response tokens cannot be separated (prompt: {prompt:?})",
            m.info().path.display()
        )));
    };
    Ok((prompt.clone(), resp.to_string()))
}

/// Token ids of a pair, TRL's way.
pub fn pair_ids(
    m: &InferenceModel,
    messages: &[ChatMessage],
    chosen: &str,
    rejected: &str,
    weight: f32,
) -> crate::model::Result<PairIds> {
    let (prompt, c) = response_text(m, messages, chosen)?;
    let (_, r) = response_text(m, messages, rejected)?;
    Ok(PairIds { prompt: m.encode(&prompt)?, chosen: m.encode(&c)?, rejected: m.encode(&r)?, weight, desirable: None })
}

/// Token ids of one answer to imitate (SFT), TRL's way; `rejected` stays empty.
pub fn answer_ids(
    m: &InferenceModel,
    messages: &[ChatMessage],
    answer: &str,
    weight: f32,
) -> crate::model::Result<PairIds> {
    let (prompt, a) = response_text(m, messages, answer)?;
    Ok(PairIds { prompt: m.encode(&prompt)?, chosen: m.encode(&a)?, rejected: Vec::new(), weight, desirable: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::write_tiny_models;
    use crate::model::{DeviceChoice, LoadOptions};
    use crate::train::logps::{SeqBatch, Truncation, sequence_logps};
    use crate::train::model::{Input, Model};
    use crate::train::weights::{load_gguf, load_hf_dir};
    use candle_core::{DType, Device, IndexOp};

    fn opts() -> LoadOptions {
        LoadOptions { device: DeviceChoice::Cpu, dequantize: true, requantize: false, ..Default::default() }
    }

    #[test]
    fn chatml_response_is_answer_im_end_newline() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let (_, hf) = write_tiny_models(tmp.path())?;
        let m = InferenceModel::load(&hf, &opts())?;
        let msgs = [ChatMessage::new("user", "hi there")];
        let (prompt, resp) = response_text(&m, &msgs, "hello")?;
        assert!(prompt.ends_with("<|im_start|>assistant\n"), "{prompt:?}");
        assert_eq!(resp, "hello<|im_end|>\n");
        let p = pair_ids(&m, &msgs, "hello", "go away", 1.0)?;
        assert_eq!(m.decode(&p.chosen)?, "hello<|im_end|>\n");
        Ok(())
    }

    /// The training forward equals the inference runtime's logits on the same weights, for
    /// both formats, and summed log-probs equal the inference logits' log-softmax sums.
    #[test]
    fn logits_equal_the_inference_runtime() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let (gguf, hf) = write_tiny_models(tmp.path())?;
        let dev = Device::Cpu;
        for path in [&hf, &gguf] {
            let inf = InferenceModel::load(path, &opts())?;
            let p = pair_ids(&inf, &[ChatMessage::new("user", "the weather")], "is nice", "is bad", 1.0)?;
            let ids: Vec<u32> = p.prompt.iter().chain(&p.chosen).copied().collect();
            let want = inf.logits(&ids)?;
            let (cfg, w) =
                if path.is_dir() { load_hf_dir(path, DType::F32, &dev)? } else { load_gguf(path, DType::F32, &dev)? };
            let ours = Model::new(cfg, w, true)?;
            let got = ours.forward(&Input::right_padded(std::slice::from_ref(&ids), 0, &dev)?)?.i(0)?;
            let d = crate::train::model::tests::max_diff(&got, &want)?;
            assert!(d < 1e-4, "{}: logits differ from the inference runtime by {d}", path.display());

            let lsm = candle_nn::ops::log_softmax(&want, 1)?.to_vec2::<f32>()?;
            let expect: f32 = (p.prompt.len()..ids.len()).map(|t| lsm[t - 1][ids[t] as usize]).sum();
            let batch = SeqBatch::new(&[(&p.prompt, &p.chosen)], &Truncation::default(), 0, &dev)?;
            let lp = sequence_logps(&ours, &batch)?.to_vec1::<f32>()?[0];
            assert!((lp - expect).abs() < 1e-3 * expect.abs().max(1.0), "logp {lp} vs {expect}");
        }
        Ok(())
    }
}
