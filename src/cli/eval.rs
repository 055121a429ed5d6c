//! `verdict eval answers|report|arena`: each model's answers to the test prompts, the blind
//! base-vs-tuned win rate of a run, and the ranking of every model that has votes.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::bail;

use super::{Cli, EvalAnswersArgs, EvalCommand};
use crate::jobs::answers::{self, AnswersEvent, AnswersJob};
use crate::qa::winrate::WinRate;
use crate::report::review::{self, RunReport};
use crate::store::{OpenMode, Store};
use crate::table;

pub fn eval_command(cli: &Cli, command: &EvalCommand) -> anyhow::Result<ExitCode> {
    match command {
        EvalCommand::Answers(args) => answers_command(cli, args),
        EvalCommand::Report { run, json, plot } => report_command(cli, *run, *json, plot.as_deref()),
        EvalCommand::Arena { json } => arena_command(cli, *json),
    }
}

fn answers_command(cli: &Cli, args: &EvalAnswersArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open(&cli.db, OpenMode::MustExist)?;
    let models = match (args.run, args.models.is_empty()) {
        (Some(run), true) => {
            let (base, tuned) = store.run_models(run)?;
            vec![base, tuned]
        }
        (None, false) => args.models.clone(),
        (Some(_), false) => bail!("give --run or --models, not both"),
        (None, true) => bail!(
            "which models? --run RUN answers with a run's base and tuned model (`verdict runs` lists them), \
             --models 1,2,3 with any models (`verdict model list` shows their ids)"
        ),
    };
    let prompts = store.evaluation_prompts(Some(args.limit))?;
    drop(store);
    let job = AnswersJob {
        db: cli.db.clone(),
        models,
        prompts,
        params: answers::answer_params(args.seed, args.max_new_tokens),
        load: answers::answer_load_options(args.device, args.threads),
        batch_rows: args.batch_rows,
    };
    let job = crate::jobs::spawn("eval-answers", move |cancel, events| answers::run(&job, cancel, events));
    {
        let cancel = job.cancel_flag();
        let _ = ctrlc::set_handler(move || {
            if cancel.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\nstopping after this token; the finished answers are kept (Ctrl-C again to quit now)");
        });
    }
    let bar = super::progress::Progress::new("answer", "{spinner} {pos}/{len} answers [{bar:30}] {msg} · ETA {eta}");
    let summary = job.wait(|event| match event {
        AnswersEvent::Planned { missing, already } => {
            bar.set_length(missing as u64);
            if already > 0 {
                bar.println(format!("{already} answers were already stored for seed {}", args.seed));
            }
        }
        AnswersEvent::ModelStarted { model_id, name, missing } => {
            bar.println(format!("model {model_id} ({name}): {missing} answers to generate"))
        }
        AnswersEvent::Progress { tokens, tokens_per_sec, .. } => {
            bar.set_message(format!("{tokens} tokens · {tokens_per_sec:.1} tok/s"))
        }
        AnswersEvent::Answered { .. } => bar.inc(1),
        AnswersEvent::Failed { model_id, prompt_id, error } => {
            bar.inc(1);
            bar.println(format!("model {model_id}, prompt {prompt_id}: {error}"));
        }
    })?;
    bar.finish();
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

/// Where blind votes come from, for a report that has none.
fn how_to_vote(run: i64) -> String {
    format!(
        "no blind votes yet: generate both models' answers (`verdict eval answers --run {run}`), then vote in the \
         TUI's runs screen (T), then e"
    )
}

fn report_command(cli: &Cli, run: i64, json: bool, plot: Option<&Path>) -> anyhow::Result<ExitCode> {
    let store = Store::open(&cli.db, OpenMode::MustExist)?;
    let report = review::run_report(&store, run)?;
    if let Some(path) = plot {
        let panels = crate::report::training_panels(review::run_curves(&store, run)?);
        let title = format!("run {run}: {}", report.tuned.name);
        crate::report::write_plot(path, &title, &panels)?;
    }
    let saved = review::save_run_report(&store, &report)?;
    let set = store.run_set(run)?;
    if json {
        let mut value = serde_json::to_value(&report)?;
        value["eval_id"] = saved.into();
        value["training_set"] = match &set {
            Some(set) => serde_json::json!({
                "method": set.method,
                "hash": set.hash,
                "counts": serde_json::from_str::<serde_json::Value>(&set.counts).unwrap_or(serde_json::Value::Null),
            }),
            None => serde_json::Value::Null,
        };
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print_report(&report);
        print_training_set(run, set.as_ref());
        if saved.is_none() {
            println!("\n{}", how_to_vote(run));
        }
    }
    if let Some(path) = plot {
        eprintln!("curves written to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Which labels trained the model: the set's hash and the label counts it was compiled from.
fn print_training_set(run: i64, set: Option<&crate::store::RunSet>) {
    match set {
        Some(set) => {
            println!(
                "\ntraining set: {}, sha256 {} (`verdict export FILE --run {run}` writes it)",
                set.method, set.hash
            );
            for line in crate::qa::run_set::count_lines(set) {
                println!("  {line}");
            }
        }
        None => println!("\ntraining set: not recorded (the run started before verdict stored it)"),
    }
}

fn rate_cells(w: &WinRate) -> [String; 2] {
    match (w.rate, w.interval) {
        (Some(rate), Some(i)) => [format!("{rate:.3}"), format!("[{:.3}, {:.3}]", i.low, i.high)],
        _ => ["–".into(), "–".into()],
    }
}

fn print_report(report: &RunReport) {
    let overall = &report.win_rate.overall;
    println!(
        "run {}: {} (model {}) against its base {} (model {}), {} blind votes",
        report.run_id, report.tuned.name, report.tuned.id, report.base.name, report.base.id, overall.n
    );
    if overall.n > 0 {
        let [rate, interval] = rate_cells(overall);
        println!(
            "tuned wins {}, loses {}, ties {}, both bad {}: win rate {rate}, 95% CI {interval} (a tie or both-bad counts ½)",
            overall.wins, overall.losses, overall.ties, overall.both_bad
        );
        let rows: Vec<Vec<String>> = report
            .win_rate
            .by_language
            .iter()
            .map(|(language, w)| {
                let [rate, interval] = rate_cells(w);
                vec![
                    language.clone(),
                    w.n.to_string(),
                    w.wins.to_string(),
                    w.losses.to_string(),
                    w.ties.to_string(),
                    w.both_bad.to_string(),
                    rate,
                    interval,
                ]
            })
            .collect();
        print!(
            "\n{}",
            table::render(&["language", "votes", "wins", "losses", "ties", "both bad", "win rate", "95% CI"], &rows)
        );
    }
    if !report.metrics.is_empty() {
        println!("\nfinal metrics:");
        for m in &report.metrics {
            println!("  {:<26} {:>10.4}  (step {})", m.name, m.value, m.step);
        }
    }
}

fn arena_command(cli: &Cli, json: bool) -> anyhow::Result<ExitCode> {
    let store = Store::open(&cli.db, OpenMode::MustExist)?;
    let Some(arena) = review::arena(&store)? else {
        bail!(
            "no blind votes yet: generate answers (`verdict eval answers --run RUN` or `--models 1,2,3`), then vote \
             in the TUI's runs screen (T), then e"
        );
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&arena)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = arena
        .models
        .iter()
        .enumerate()
        .map(|(rank, m)| {
            vec![
                (rank + 1).to_string(),
                m.model_id.to_string(),
                m.name.clone(),
                format!("{:.0}", m.fit.rating),
                format!("[{:.0}, {:.0}]", m.fit.ci_low, m.fit.ci_high),
                m.fit.games.to_string(),
                m.fit.wins.to_string(),
                m.fit.losses.to_string(),
                (m.fit.ties + m.fit.both_bad).to_string(),
            ]
        })
        .collect();
    println!(
        "{} blind votes; Bradley-Terry ratings on the Elo scale (average 1000), 95% intervals; a both-bad vote \
         counts as a tie",
        arena.votes
    );
    print!("{}", table::render(&["rank", "id", "model", "rating", "95% CI", "games", "wins", "losses", "ties"], &rows));
    Ok(ExitCode::SUCCESS)
}
