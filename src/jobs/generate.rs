//! Generating candidates for the prompts that have too few, storing each with the model
//! id, its sampling parameters and its own seed, so any candidate can be regenerated.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::domain::sha256_hex;
use crate::model::{
    Candidate, ChatMessage, FinishReason, GenerateParams, LoadOptions, Model, ModelInfo, Request, RequestEvent,
};
use crate::store::{GenerationTarget, OpenMode, Store, TargetFilter};

/// What to generate, and with what.
#[derive(Debug, Clone)]
pub struct GenerateJob {
    pub db: PathBuf,
    pub model: PathBuf,
    pub load: LoadOptions,
    /// `candidates` is the number each prompt should end up with; `seed` the base seed.
    pub params: GenerateParams,
    pub filter: TargetFilter,
    /// Candidates decoded together, across prompts (`--batch-rows`); `None`: the model's
    /// default (`Model::batch_rows`).
    pub batch_rows: Option<usize>,
}

/// Progress, in the order it happens.
#[derive(Debug, Clone, PartialEq)]
pub enum GenerateEvent {
    /// The model is loaded; `prompts` need candidates.
    Started { model: String, run_quantization: String, prompts: usize },
    /// Tokens are coming for prompt `index` (0-based; several prompts decode at once).
    /// `tokens` and `tokens_per_sec` count the whole job so far (every prompt's candidates,
    /// the time since the model was loaded).
    Progress { index: usize, prompt_id: i64, tokens: usize, tokens_per_sec: f64 },
    /// A prompt is done: how many new candidates were stored and how many were duplicates.
    PromptDone { index: usize, prompt_id: i64, stored: usize, duplicates: usize },
    /// A prompt could not be answered (e.g. longer than the context window).
    PromptFailed { prompt_id: i64, error: String },
}

/// What a job did.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct GenerateSummary {
    pub prompts: usize,
    pub stored: usize,
    pub duplicates: usize,
    pub failed: usize,
    /// Candidates that were empty (the model ended its turn at once): not stored.
    pub empty: usize,
    pub tokens: usize,
    pub seconds: f64,
    pub cancelled: bool,
}

impl GenerateSummary {
    /// "3 new candidates for 1 prompt": what the CLI and the TUI report first.
    pub fn headline(&self) -> String {
        let s = |n: usize| if n == 1 { "" } else { "s" };
        format!("{} new candidate{} for {} prompt{}", self.stored, s(self.stored), self.prompts, s(self.prompts))
    }
}

/// The sampling parameters stored with each candidate (its own seed included).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct StoredParams {
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: Option<usize>,
    pub repeat_penalty: f32,
    pub repeat_last_n: usize,
    pub max_new_tokens: usize,
    pub seed: u64,
    /// The weights' quantization as it ran (e.g. Q8_0 after re-quantizing Q4_1).
    pub run_quantization: String,
    /// The answer stopped at `max_new_tokens` rather than at its end (shown beside it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cut_off: bool,
}

impl StoredParams {
    /// What is stored for one candidate of a generation with `params`.
    pub fn of(params: &GenerateParams, seed: u64, run_quantization: &str) -> StoredParams {
        StoredParams {
            temperature: params.temperature,
            top_p: params.top_p,
            top_k: params.top_k,
            repeat_penalty: params.repeat_penalty,
            repeat_last_n: params.repeat_last_n,
            max_new_tokens: params.max_new_tokens,
            seed,
            run_quantization: run_quantization.to_string(),
            cut_off: false,
        }
    }

    /// The same, for a candidate that ended for `reason`.
    pub fn ended(self, reason: FinishReason) -> StoredParams {
        StoredParams { cut_off: reason == FinishReason::Length, ..self }
    }

    /// The parameters that regenerate exactly this one candidate.
    pub fn regenerate(&self) -> GenerateParams {
        GenerateParams {
            candidates: 1,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            max_new_tokens: self.max_new_tokens,
            seed: self.seed,
        }
    }
}

/// The base seed for one prompt: different prompts (and later rounds on the same prompt)
/// must not reuse one seed, or they would sample the same way.
pub fn prompt_seed(base: u64, prompt_uid: &str, existing: usize) -> u64 {
    let hash = sha256_hex(&["seed", &base.to_string(), prompt_uid, &existing.to_string()]);
    u64::from_str_radix(&hash[..16], 16).expect("hex")
}

impl GenerateJob {
    /// The TUI's generation: with `model`, else the default one (fetched on first use, its
    /// steps logged), until every prompt in `prompt_ids` has `candidates` answers, with the
    /// default sampling on the default device.
    pub fn for_prompts(
        db: PathBuf,
        model: Option<&std::path::Path>,
        prompt_ids: Vec<i64>,
        candidates: usize,
    ) -> anyhow::Result<GenerateJob> {
        Ok(GenerateJob {
            db,
            model: crate::model::resolve_with(model, None, &|m| tracing::info!("{m}"))?,
            load: LoadOptions::default(),
            params: GenerateParams { candidates, ..Default::default() },
            filter: TargetFilter { prompt_ids, below: candidates, ..Default::default() },
            batch_rows: None,
        })
    }
}

/// Where `--device auto` runs generation and training here, as the TUI's status line says it.
pub fn auto_device_label() -> String {
    crate::model::DeviceChoice::Auto.device().map(|d| crate::model::device_label(&d)).unwrap_or_else(|_| "cpu".into())
}

/// Runs the job to the end or until `cancel` is set; finished candidates are kept.
pub fn run(
    job: &GenerateJob,
    cancel: &AtomicBool,
    events: &mut dyn FnMut(GenerateEvent),
) -> anyhow::Result<GenerateSummary> {
    job.params.validate()?;
    let store = Store::open(&job.db, OpenMode::MustExist)?;
    let mut model = Model::load(&job.model, &job.load)?;
    let info = model.info().clone();
    let name = info.display_name();
    let format = match info.format {
        crate::model::ModelFormat::Gguf => "gguf",
        crate::model::ModelFormat::Hf => "hf",
    };
    let model_id = store.register_model(
        &info.sha256,
        &name,
        &job.model.display().to_string(),
        format,
        &info.architecture,
        &info.run_quantization,
    )?;
    let mut filter = job.filter.clone();
    filter.below = job.params.candidates;
    let targets = store.generation_targets(&filter)?;
    events(GenerateEvent::Started {
        model: name,
        run_quantization: info.run_quantization.clone(),
        prompts: targets.len(),
    });
    let started = std::time::Instant::now();
    let mut summary = GenerateSummary { prompts: targets.len(), ..Default::default() };
    let requests: Vec<Request> = targets
        .iter()
        .map(|target| {
            let mut params = job.params.clone();
            params.candidates = job.params.candidates - target.candidates;
            params.seed = prompt_seed(job.params.seed, &target.uid, target.candidates);
            let messages = target.messages.iter().map(|m| ChatMessage::new(&m.role, &m.content)).collect();
            Request { messages, params }
        })
        .collect();
    let rows = job.batch_rows.unwrap_or_else(|| model.batch_rows()).max(1);
    let mut rate = TokenRate::new();
    // Each prompt's candidates are stored as soon as that prompt is done, whatever still decodes.
    let mut failure: Option<anyhow::Error> = None;
    let mut on_event = |index: usize, event: RequestEvent| {
        let prompt_id = targets[index].prompt_id;
        match event {
            RequestEvent::Progress(p) => {
                let (tokens, tokens_per_sec) = rate.count(&p);
                events(GenerateEvent::Progress { index, prompt_id, tokens, tokens_per_sec });
            }
            RequestEvent::Done(Ok(candidates)) if failure.is_none() => {
                let params = &requests[index].params;
                match store_candidates(&store, &targets[index], params, &candidates, model_id, &info, &mut summary) {
                    Ok((stored, duplicates)) => {
                        events(GenerateEvent::PromptDone { index, prompt_id, stored, duplicates })
                    }
                    Err(e) => {
                        // The store failed (disk full?): stop decoding, and say so once it has.
                        failure = Some(e);
                        cancel.store(true, Ordering::Relaxed);
                    }
                }
            }
            RequestEvent::Done(Ok(_)) => {}
            RequestEvent::Done(Err(error)) => {
                summary.failed += 1;
                events(GenerateEvent::PromptFailed { prompt_id, error: error.to_string() });
            }
        }
    };
    model.generate_many(&requests, rows, cancel, &mut on_event)?;
    if let Some(e) = failure {
        return Err(e);
    }
    summary.cancelled |= cancel.load(Ordering::Relaxed);
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Tokens generated across every request of a `generate_many` call, and their rate since it
/// began: each progress report after the prefill is one token.
pub(crate) struct TokenRate {
    started: std::time::Instant,
    tokens: usize,
}

impl TokenRate {
    pub(crate) fn new() -> Self {
        TokenRate { started: std::time::Instant::now(), tokens: 0 }
    }

    /// Counts `p` and returns the tokens so far and tokens per second.
    pub(crate) fn count(&mut self, p: &crate::model::GenerationProgress) -> (usize, f64) {
        self.tokens += usize::from(p.tokens_generated > 0);
        (self.tokens, self.tokens as f64 / self.started.elapsed().as_secs_f64().max(1e-9))
    }
}

/// Stores one prompt's finished candidates (not the cancelled or empty ones); returns how many
/// were stored and how many were already there.
fn store_candidates(
    store: &Store,
    target: &GenerationTarget,
    params: &GenerateParams,
    candidates: &[Candidate],
    model_id: i64,
    info: &ModelInfo,
    summary: &mut GenerateSummary,
) -> anyhow::Result<(usize, usize)> {
    let (mut stored, mut duplicates) = (0, 0);
    for candidate in candidates {
        summary.tokens += candidate.completion_tokens;
        if candidate.finish_reason == FinishReason::Cancelled {
            summary.cancelled = true;
            continue;
        }
        let text = candidate.text.trim();
        if text.is_empty() {
            // An answer that is only an end-of-turn token is nothing to judge.
            summary.empty += 1;
            continue;
        }
        let kept = StoredParams::of(params, candidate.seed, &info.run_quantization).ended(candidate.finish_reason);
        let json = serde_json::to_string(&kept)?;
        match store.add_generated(target.prompt_id, &target.uid, text, model_id, &json)? {
            Some(_) => stored += 1,
            None => duplicates += 1,
        }
    }
    summary.stored += stored;
    summary.duplicates += duplicates;
    Ok((stored, duplicates))
}
