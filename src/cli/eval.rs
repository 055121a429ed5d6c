//! `verdict eval answers|report|arena`: each model's answers to the test prompts, the blind
//! base-vs-tuned win rate of a run, and the ranking of every model that has votes.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};

use super::{Cli, EvalAnswersArgs, EvalCommand};
use crate::jobs::answers::{self, AnswersEvent, AnswersJob};
use crate::store::{OpenMode, Store};

pub fn eval_command(cli: &Cli, command: &EvalCommand) -> anyhow::Result<ExitCode> {
    match command {
        EvalCommand::Answers(args) => answers_command(cli, args),
    }
}

fn answers_command(cli: &Cli, args: &EvalAnswersArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open(&cli.db, OpenMode::MustExist)?;
    let models = match (args.run, args.models.is_empty()) {
        (Some(run), true) => {
            let (base, tuned) = answers::run_models(&store, run)?;
            vec![base, tuned]
        }
        (None, false) => args.models.clone(),
        (Some(_), false) => bail!("give --run or --models, not both"),
        (None, true) => bail!(
            "which models? --run RUN answers with a run's base and tuned model (`verdict runs` lists them), \
             --models 1,2,3 with any models (`verdict model list` shows their ids)"
        ),
    };
    let prompts = answers::evaluation_prompts(&store, Some(args.limit))?;
    drop(store);
    let job = AnswersJob {
        db: cli.db.clone(),
        models,
        prompts,
        params: answers::answer_params(args.seed, args.max_new_tokens),
        load: answers::answer_load_options(args.device, args.threads),
    };
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = cancel.clone();
        let _ = ctrlc::set_handler(move || {
            if cancel.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\nstopping after this token; the finished answers are kept (Ctrl-C again to quit now)");
        });
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos}/{len} answers [{bar:30}] {msg} · ETA {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    let summary = answers::run(&job, &cancel, &mut |event| match event {
        AnswersEvent::Planned { missing, already } => {
            bar.set_length(missing as u64);
            if already > 0 {
                bar.println(format!("{already} answers were already stored for seed {}", args.seed));
            }
        }
        AnswersEvent::ModelStarted { model_id, name, missing } => {
            bar.println(format!("model {model_id} ({name}): {missing} answers to generate"))
        }
        AnswersEvent::Progress { tokens, decode_tokens_per_sec, .. } => {
            bar.set_message(format!("{tokens} tokens · {decode_tokens_per_sec:.1} tok/s"))
        }
        AnswersEvent::Answered { .. } => bar.inc(1),
        AnswersEvent::Failed { model_id, prompt_id, error } => {
            bar.inc(1);
            bar.println(format!("model {model_id}, prompt {prompt_id}: {error}"));
        }
    })?;
    bar.finish_and_clear();
    println!(
        "{} answers generated ({} tokens, {:.1} s), {} already stored, {} failed; seed {}{}",
        summary.generated,
        summary.tokens,
        summary.seconds,
        summary.already,
        summary.failed,
        args.seed,
        if summary.cancelled { "; stopped early: run it again to finish" } else { "" }
    );
    if let Some(run) = args.run.filter(|_| !summary.cancelled) {
        println!(
            "compare them in the TUI's runs screen (T), then e for the blind evaluation; then `verdict eval report {run}`"
        );
    }
    Ok(if summary.cancelled { ExitCode::from(130) } else { ExitCode::SUCCESS })
}
