//! Phase 5, evaluation (every `eval_every` steps, inside the step loop): the loss and metrics
//! on the test split with gradients detached, and one answer per fixed sample prompt generated
//! with the run's current weights, both stored with the step.

use std::sync::atomic::AtomicBool;

use crate::model::{self, ChatMessage};
use crate::store::Store;
use crate::train::export;
use crate::train::loss::Metrics;
use crate::train::model::Model as Net;
use crate::train::step;

use super::steps::Data;
use super::{TrainConfig, TrainEvent};

/// The metrics with TRL's names, each prefixed (`eval_` for evaluation).
pub(super) fn metrics_vec(m: &Metrics, prefix: &str) -> Vec<(String, f64)> {
    m.iter().map(|(k, v)| (format!("{prefix}{k}"), *v)).collect()
}

/// The test split's metrics after `step`, stored and sent as an event; nothing without a test
/// split.
pub(super) fn test_split(
    net: &Net,
    data: &Data,
    batch_size: usize,
    (run_id, step): (i64, usize),
    store: &mut Store,
    events: &mut dyn FnMut(TrainEvent),
) -> anyhow::Result<()> {
    if data.test.is_empty() {
        return Ok(());
    }
    let eval = step::evaluate(net, data.test, data.test_refs, data.step_cfg, batch_size)?;
    let values = metrics_vec(&eval, "eval_");
    store.add_metrics(run_id, step as i64, &values)?;
    events(TrainEvent::Eval { step, metrics: values });
    Ok(())
}

/// The run's answers to its fixed sample prompts.
pub(super) struct Sampler {
    /// The base model's tokenizer, template and architecture, without its weights: each
    /// sampling assembles the model from the run's own. `None` when the run generates no samples.
    frame: Option<model::Frame>,
    prompts: Vec<(i64, Vec<ChatMessage>)>,
    seed: u64,
    max_new_tokens: usize,
    run_id: i64,
}

impl Sampler {
    pub fn new(
        inference: model::Model,
        prompts: Vec<(i64, Vec<ChatMessage>)>,
        config: &TrainConfig,
        run_id: i64,
    ) -> Sampler {
        // The base's weights are dropped here, before the trainable weights load.
        let frame = (config.eval_every > 0 && config.sample_prompts > 0).then(|| inference.frame());
        Sampler { frame, prompts, seed: config.seed, max_new_tokens: config.sample_max_tokens, run_id }
    }

    /// Whether there is any prompt to answer.
    pub fn has_prompts(&self) -> bool {
        !self.prompts.is_empty()
    }

    /// Generates and stores the answers with the weights of `step`; sends `Samples`.
    pub fn sample(
        &self,
        net: &Net,
        step: usize,
        store: &Store,
        events: &mut dyn FnMut(TrainEvent),
    ) -> anyhow::Result<()> {
        let count = match &self.frame {
            Some(frame) => self.write_samples(net, frame, step, store)?,
            None => 0,
        };
        events(TrainEvent::Samples { step, count });
        Ok(())
    }

    /// Generates one answer per sample prompt with the run's current weights (LoRA merged, as
    /// Q8_0 on the CPU), the same seed every time, and stores them with the step.
    fn write_samples(&self, net: &Net, frame: &model::Frame, step: usize, store: &Store) -> anyhow::Result<usize> {
        // One merged f32 matrix at a time, each kept as Q8_0 on the CPU: the sampling model
        // takes about a quarter of the f32 model's bytes beside the run (the memory plan's
        // `sampling` phase), and decodes on verdict's quantized kernel.
        let lazy = export::LazyTensors::of(net, export::Layout::Split)?;
        let (form, run_as) = match frame.device().is_cpu() {
            true => (model::llama::WeightForm::Q8_0, "Q8_0"),
            false => (model::llama::WeightForm::AsGiven, "F32"),
        };
        let mut current = frame.with_hf_weights(&|name| lazy.get(name), form)?;
        let params = model::GenerateParams {
            candidates: 1,
            max_new_tokens: self.max_new_tokens,
            seed: self.seed,
            ..model::GenerateParams::default()
        };
        let stored = serde_json::to_string(&crate::jobs::generate::StoredParams::of(&params, self.seed, run_as))?;
        let never = AtomicBool::new(false);
        // All prompts decode as one batch (on the CPU each answer is the same as alone); each
        // is stored as it finishes.
        let requests: Vec<model::Request> = self
            .prompts
            .iter()
            .map(|(_, messages)| model::Request { messages: messages.clone(), params: params.clone() })
            .collect();
        let mut outcome: anyhow::Result<()> = Ok(());
        let rows = current.batch_rows();
        current.generate_many(&requests, rows, &never, &mut |index, event| {
            let model::RequestEvent::Done(answers) = event else { return };
            if outcome.is_err() {
                return;
            }
            let prompt_id = self.prompts[index].0;
            outcome = answers.map_err(anyhow::Error::from).and_then(|answers| {
                let text = answers.first().map(|c| c.text.as_str()).unwrap_or("");
                store.add_run_sample(self.run_id, step as i64, prompt_id, text, &stored)?;
                Ok(())
            });
        })?;
        outcome?;
        Ok(self.prompts.len())
    }
}
