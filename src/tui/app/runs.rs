//! What `App` reads for the runs list and a run's curves. When one opens and after a command
//! (a blind vote changes a win rate) it reads them at once: a few small queries on a key press.
//! While either is on the stack and the store changes (a step committed by this window's
//! training thread or by another process), it reads them again on a thread with its own
//! connection (`jobs::spawn`); the UI thread only asks SQLite's data version, twice a second.

use std::path::Path;

use super::App;
use crate::jobs::{Job, Update, spawn};
use crate::store::{OpenMode, RunRow, Store};
use crate::tui::screens::Screen;
use crate::tui::screens::curves::Curves;
use crate::tui::screens::runs::WinRates;

/// The runs, their win rates and the curves of the runs shown.
pub struct RunsData {
    pub runs: Vec<RunRow>,
    pub win_rates: WinRates,
    pub curves: Vec<(i64, Curves)>,
}

/// The re-read on its thread while one runs, and the data version the screens were read at.
#[derive(Default)]
pub struct RunsReload {
    work: Option<Job<(), RunsData>>,
    seen_version: Option<i64>,
    /// The store changed again while a re-read ran: read once more when it arrives.
    again: bool,
}

/// Reads the runs, each run's latest blind win rate, and the curves of `curves_of`.
pub fn read(store: &Store, curves_of: &[i64]) -> anyhow::Result<RunsData> {
    let mut win_rates = WinRates::new();
    // Newest first: the first row seen for a run is its latest.
    for eval in store.evals(None)? {
        if let Some(run_id) = eval.run_id {
            win_rates.entry(run_id).or_insert((eval.win_rate, eval.ci_low, eval.ci_high));
        }
    }
    let curves = curves_of.iter().map(|&id| Ok((id, read_curves(store, id)?))).collect::<anyhow::Result<_>>()?;
    // A run left `running` by a process that died says so before it is shown.
    crate::jobs::train::settle_crashed(store)?;
    Ok(RunsData { runs: store.runs()?, win_rates, curves })
}

/// One run's metric series, as the curves screen draws them.
pub fn read_curves(store: &Store, run_id: i64) -> anyhow::Result<Curves> {
    let series = |name: &str| -> anyhow::Result<Vec<(f64, f64)>> {
        Ok(store.metric_series(run_id, name)?.into_iter().map(|(s, v)| (s as f64, v)).collect())
    };
    let last = |name: &str| -> anyhow::Result<Option<f64>> { Ok(series(name)?.last().map(|p| p.1)) };
    let mut recent: Vec<f64> = series("step_seconds")?.iter().rev().take(10).map(|p| p.1).collect();
    recent.sort_by(f64::total_cmp);
    Ok(Curves {
        loss: series("loss")?,
        eval_loss: series("eval_loss")?,
        margins: series("rewards/margins")?,
        eval_margins: series("eval_rewards/margins")?,
        accuracy: series("rewards/accuracies")?,
        eval_accuracy: series("eval_rewards/accuracies")?,
        chosen: series("rewards/chosen")?,
        rejected: series("rewards/rejected")?,
        kl: series("kl")?,
        eval_kl: series("eval_kl")?,
        nll: series("nll_loss")?,
        eval_nll: series("eval_nll_loss")?,
        speed: series("tokens_per_second")?,
        tokens_per_second: last("tokens_per_second")?,
        tflops: last("model_tflops_per_second")?,
        mfu: last("mfu")?,
        epoch: last("epoch")?,
        seconds_per_step: recent.get(recent.len() / 2).copied(),
    })
}

impl App {
    /// Whether a runs screen is on the stack, and the runs whose curves are.
    fn runs_screens(&self) -> Option<Vec<i64>> {
        let mut any = false;
        let mut curves = Vec::new();
        for screen in &self.screens {
            match screen {
                Screen::Runs(_) => any = true,
                Screen::Curves(c) => {
                    any = true;
                    curves.push(c.run_id);
                }
                _ => {}
            }
        }
        any.then_some(curves)
    }

    /// Reads what the runs screens on the stack show, now.
    pub(super) fn read_runs_now(&mut self) -> anyhow::Result<()> {
        let Some(curves_of) = self.runs_screens() else { return Ok(()) };
        let data = read(&self.store, &curves_of)?;
        self.runs_reload.seen_version = self.data_version;
        self.show_runs(data);
        Ok(())
    }

    fn show_runs(&mut self, data: RunsData) {
        for screen in &mut self.screens {
            match screen {
                Screen::Runs(runs) => runs.show(data.runs.clone(), data.win_rates.clone()),
                Screen::Curves(c) => {
                    c.run = data.runs.iter().find(|r| r.id == c.run_id).cloned();
                    if let Some((_, curves)) = data.curves.iter().find(|(id, _)| *id == c.run_id) {
                        c.curves = curves.clone();
                    }
                }
                _ => {}
            }
        }
    }

    /// Takes in a re-read that arrived, and starts one when the store changed since the last
    /// (or `stored`: this window's training thread reported something). Whether anything
    /// arrived.
    pub(super) fn poll_runs(&mut self, stored: bool) -> bool {
        let mut arrived = false;
        if let Some(Update::Finished(result)) = self.runs_reload.work.as_mut().and_then(|w| w.try_next()) {
            self.runs_reload.work = None;
            match result {
                Ok(data) => {
                    self.show_runs(data);
                    arrived = true;
                }
                Err(e) => tracing::error!("re-reading the runs: {e:#}"),
            }
        }
        let Some(curves_of) = self.runs_screens() else { return arrived };
        let reload = &mut self.runs_reload;
        if !(stored || reload.again || self.data_version != reload.seen_version) {
            return arrived;
        }
        if reload.work.is_some() {
            reload.again = true;
            return arrived;
        }
        reload.again = false;
        reload.seen_version = self.data_version;
        let path = self.store.path().to_path_buf();
        if path == Path::new(":memory:") {
            // No second connection reaches an in-memory store (tests): read it here.
            if let Err(e) = self.read_runs_now() {
                tracing::error!("re-reading the runs: {e:#}");
            }
            return true;
        }
        reload.work = Some(spawn("runs", move |_, _| read(&Store::open(&path, OpenMode::MustExist)?, &curves_of)));
        arrived
    }
}
