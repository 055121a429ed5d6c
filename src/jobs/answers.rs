//! Each model's answer to the evaluation prompts, for one sampling seed: what the diff screen
//! and the blind evaluation compare. Every model answers with the same seed and parameters, so
//! two models differ only by their weights; answers already stored for (model, prompt, seed)
//! are kept, so the job can be stopped and started again. One model is in memory at a time.
//! The store lookups it starts from (the test prompts, a run's models, a model's files) are
//! `Store::evaluation_prompts`, `run_models` and `model_path`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::jobs::generate::{StoredParams, TokenRate};
use crate::model::{ChatMessage, FinishReason, GenerateParams, LoadOptions, Model, Request, RequestEvent};
use crate::store::{OpenMode, Store};

/// The seed the CLI and the TUI use unless told otherwise.
pub const DEFAULT_SEED: u64 = 42;
/// Long enough for a short answer; each token costs one forward pass per model.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 160;
/// How many test prompts are answered unless told otherwise.
pub const DEFAULT_PROMPTS: usize = 50;

/// The sampling parameters every model answers with: one answer, the default sampling.
pub fn answer_params(seed: u64, max_new_tokens: usize) -> GenerateParams {
    GenerateParams { candidates: 1, seed, max_new_tokens, ..GenerateParams::default() }
}

/// How the models are loaded: a quantized GGUF base runs dequantized to f32, as the trainer
/// loads it, so that a base-vs-tuned difference comes from the training and not from the
/// base model running at a coarser precision than the tuned one.
pub fn answer_load_options(device: crate::model::DeviceChoice, threads: Option<usize>) -> LoadOptions {
    LoadOptions { device, threads, dequantize: true, requantize: false }
}

/// What to answer, and with what.
#[derive(Debug, Clone)]
pub struct AnswersJob {
    pub db: PathBuf,
    /// Ids from the `models` table; their files must still be where the table says.
    pub models: Vec<i64>,
    /// The prompts, in order (`evaluation_prompts` gives the default choice).
    pub prompts: Vec<i64>,
    /// `candidates` must be 1; `seed` is both the sampling seed and the key answers are stored under.
    pub params: GenerateParams,
    pub load: LoadOptions,
    /// Most answers decoded together (`None`: the model's default, `Model::batch_rows`).
    pub batch_rows: Option<usize>,
}

/// Progress, in the order it happens.
#[derive(Debug, Clone, PartialEq)]
pub enum AnswersEvent {
    /// Before any model is loaded: how many answers are missing in all.
    Planned { missing: usize, already: usize },
    /// A model is loaded and starts on its `missing` answers.
    ModelStarted { model_id: i64, name: String, missing: usize },
    /// A token of `prompt_id`'s answer; `tokens` and `tokens_per_sec` count this model's
    /// answers so far (several prompts decode together).
    Progress { model_id: i64, prompt_id: i64, tokens: usize, tokens_per_sec: f64 },
    /// An answer is stored.
    Answered { model_id: i64, prompt_id: i64, response_id: i64 },
    /// A prompt could not be answered by this model (e.g. longer than its context window).
    Failed { model_id: i64, prompt_id: i64, error: String },
}

/// What a job did.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct AnswersSummary {
    pub models: usize,
    pub prompts: usize,
    /// Answers generated and stored by this job.
    pub generated: usize,
    /// Answers that were already stored for this seed.
    pub already: usize,
    pub failed: usize,
    pub tokens: usize,
    pub seconds: f64,
    pub cancelled: bool,
}

/// Generates every missing answer, model by model, until done or `cancel` is set; what is
/// finished is kept.
pub fn run(
    job: &AnswersJob,
    cancel: &AtomicBool,
    events: &mut dyn FnMut(AnswersEvent),
) -> anyhow::Result<AnswersSummary> {
    job.params.validate()?;
    if job.params.candidates != 1 {
        bail!("a model gives one answer per prompt and seed: candidates must be 1");
    }
    let mut store = Store::open(&job.db, OpenMode::MustExist)?;
    let seed = job.params.seed;
    let prompts: Vec<_> = {
        let all: std::collections::HashMap<i64, _> = store.prompts()?.into_iter().map(|p| (p.id, p)).collect();
        job.prompts
            .iter()
            .map(|id| all.get(id).cloned().with_context(|| format!("no prompt {id}")))
            .collect::<anyhow::Result<_>>()?
    };
    let mut plan = Vec::with_capacity(job.models.len());
    let mut summary = AnswersSummary { models: job.models.len(), prompts: prompts.len(), ..Default::default() };
    for &model_id in &job.models {
        let path = store.model_path(model_id)?;
        let mut missing = Vec::new();
        for prompt in &prompts {
            if store.model_answer(model_id, prompt.id, seed)?.is_some() {
                summary.already += 1;
            } else {
                missing.push(prompt);
            }
        }
        plan.push((model_id, path, missing));
    }
    events(AnswersEvent::Planned { missing: plan.iter().map(|p| p.2.len()).sum(), already: summary.already });
    let started = std::time::Instant::now();
    for (model_id, path, missing) in plan {
        if missing.is_empty() {
            continue;
        }
        if cancel.load(Ordering::Relaxed) {
            summary.cancelled = true;
            break;
        }
        let mut model = Model::load(&path, &job.load).with_context(|| format!("model {model_id}"))?;
        let run_quantization = model.info().run_quantization.clone();
        events(AnswersEvent::ModelStarted {
            model_id,
            name: store.model_name_or(model_id, &path.display().to_string())?,
            missing: missing.len(),
        });
        // Several prompts decode as one batch where the model's kernels make that exact (each
        // answer is what it would be alone, so a resumed job gives the answers a whole one
        // would); each answer is stored the moment its prompt is done.
        let requests: Vec<Request> = missing
            .iter()
            .map(|prompt| Request {
                messages: prompt.messages.iter().map(|m| ChatMessage::new(&m.role, &m.content)).collect(),
                params: job.params.clone(),
            })
            .collect();
        let rows = job.batch_rows.unwrap_or_else(|| model.batch_rows()).max(1);
        let mut rate = TokenRate::new();
        let mut failure: Option<anyhow::Error> = None;
        let mut on_event = |index: usize, event: RequestEvent| {
            let prompt_id = missing[index].id;
            match event {
                RequestEvent::Progress(p) => {
                    let (tokens, tokens_per_sec) = rate.count(&p);
                    events(AnswersEvent::Progress { model_id, prompt_id, tokens, tokens_per_sec });
                }
                RequestEvent::Done(Ok(mut candidates)) if failure.is_none() && !candidates.is_empty() => {
                    let answer = candidates.remove(0);
                    summary.tokens += answer.completion_tokens;
                    if answer.finish_reason == FinishReason::Cancelled {
                        summary.cancelled = true;
                        return;
                    }
                    // Stored as generated, even when empty or only whitespace: that is this
                    // model's answer, and a judge should see it lose.
                    let params =
                        StoredParams::of(&job.params, answer.seed, &run_quantization).ended(answer.finish_reason);
                    match store_answer(&mut store, model_id, prompt_id, seed, &answer.text, &params) {
                        Ok(response_id) => {
                            summary.generated += 1;
                            events(AnswersEvent::Answered { model_id, prompt_id, response_id });
                        }
                        Err(e) => {
                            // The store failed (disk full?): stop decoding, and say so once it has.
                            failure = Some(e);
                            cancel.store(true, Ordering::Relaxed);
                        }
                    }
                }
                // Cancelled before it started, or after a store failure.
                RequestEvent::Done(Ok(_)) => summary.cancelled |= failure.is_none(),
                RequestEvent::Done(Err(error)) => {
                    summary.failed += 1;
                    events(AnswersEvent::Failed { model_id, prompt_id, error: error.to_string() });
                }
            }
        };
        model.generate_many(&requests, rows, cancel, &mut on_event)?;
        if let Some(e) = failure {
            return Err(e);
        }
        if cancel.load(Ordering::Relaxed) {
            summary.cancelled = true;
            break;
        }
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Stores one model's answer to one prompt with the parameters it was sampled with.
fn store_answer(
    store: &mut Store,
    model_id: i64,
    prompt_id: i64,
    seed: u64,
    text: &str,
    params: &StoredParams,
) -> anyhow::Result<i64> {
    let json = serde_json::to_string(params)?;
    Ok(store.add_model_answer(model_id, prompt_id, seed, text, &json)?)
}
