//! The terminal UI: the event loop, terminal setup and restore, and the screens.
//!
//! Keys become `Action`s through the key map, `App` routes each to the screen on top and
//! carries out the `Command`s it returns, and `draw` renders the screens. Anything that needs the terminal itself (an external editor) comes
//! back from the app as an `Effect` for this loop to carry out.

pub mod app;
pub mod draw;
pub mod field;
pub mod form;
pub mod generation;
pub mod input;
pub mod judge;
pub mod key_help;
pub mod keymap;
pub mod loading;
pub mod queue;
pub mod screens;
pub mod text;
pub mod widgets;
pub mod worddiff;

use std::io::Stdout;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use crossterm::event::{self, Event, KeyEventKind};
use crossterm::execute;
use crossterm::terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

pub use app::App;

type Term = Terminal<CrosstermBackend<Stdout>>;

/// Where verdict keeps its log and key map.
pub fn config_dir() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "verdict").map(|d| d.config_dir().to_path_buf())
}

/// The log file: the TUI owns the terminal, so everything goes here.
pub fn log_path() -> PathBuf {
    directories::ProjectDirs::from("", "", "verdict")
        .map(|d| d.data_local_dir().join("verdict.log"))
        .unwrap_or_else(|| std::env::temp_dir().join("verdict.log"))
}

fn init_logging() {
    let path = log_path();
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(file) = std::fs::OpenOptions::new().create(true).append(true).open(&path) {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::sync::Mutex::new(file))
            .with_ansi(false)
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("VERDICT_LOG").unwrap_or_else(|_| "info".into()),
            )
            .try_init();
    }
}

/// Runs the TUI until the user quits.
pub fn run(mut app: App) -> anyhow::Result<()> {
    init_logging();
    tracing::info!(db = %app.store.path().display(), annotator = %app.annotator, "tui start");
    install_panic_hook();
    let mut terminal = enter()?;
    let result = event_loop(&mut terminal, &mut app);
    if let Some(job) = &app.job {
        // Closing asks the job to stop at its next safe point; finished work is stored.
        job.work.cancel();
    }
    leave(&mut terminal);
    // A run training on this process's thread stops with a checkpoint, so it can be resumed.
    if app.training().is_some() {
        eprintln!("stopping the training run at the end of its step (it can be resumed)…");
        app.stop_training(Duration::from_secs(120));
    }
    if let Err(error) = &result {
        tracing::error!("{error:#}");
    }
    result
}

fn event_loop(terminal: &mut Term, app: &mut App) -> anyhow::Result<()> {
    while !app.quit {
        terminal.draw(|frame| draw::draw(frame, app))?;
        // While a job runs, tick faster so its progress shows; keys are still read first.
        // While the queue loads, faster still: keys may be waiting for it.
        let tick = if app.queue.loading.is_some() {
            20
        } else if app.job.is_some() || app.training().is_some() {
            100
        } else {
            250
        };
        let key_ready = event::poll(Duration::from_millis(tick))?;
        app.poll_job();
        if let Some(effect) = app.pending_effect.take() {
            carry_out(terminal, app, effect)?;
        }
        if !key_ready {
            continue;
        }
        match event::read()? {
            // Only presses: terminals that report releases would otherwise act twice.
            Event::Key(key) if key.kind == KeyEventKind::Press => {
                // A diagnostic: VERDICT_PANIC_ON_KEY=f12 makes that key panic, to check (as the
                // end-to-end test does) that a panic restores the terminal and is logged.
                if std::env::var("VERDICT_PANIC_ON_KEY").ok() == keymap::key_name(&key) {
                    panic!("diagnostic panic: VERDICT_PANIC_ON_KEY={:?}", keymap::key_name(&key));
                }
                if let Some(effect) = app.handle_key(key) {
                    carry_out(terminal, app, effect)?;
                }
            }
            Event::Resize(_, _) => terminal.autoresize()?,
            _ => {}
        }
    }
    Ok(())
}

fn carry_out(terminal: &mut Term, app: &mut App, effect: app::Effect) -> anyhow::Result<()> {
    match effect {
        app::Effect::EditExternally { response_id, text } => {
            leave(terminal);
            let edited = edit_in_editor(&text);
            *terminal = enter()?;
            match edited {
                Ok(new_text) => {
                    if let Err(e) = app.finish_rewrite(response_id, &new_text) {
                        app.message = format!("error: {e:#}");
                    }
                }
                Err(e) => app.message = format!("error: {e:#}"),
            }
        }
    }
    Ok(())
}

/// Opens `$VISUAL` (or `$EDITOR`) on a temporary file holding `text`.
fn edit_in_editor(text: &str) -> anyhow::Result<String> {
    let editor = std::env::var("VISUAL").or_else(|_| std::env::var("EDITOR")).context("no $VISUAL or $EDITOR set")?;
    let path = std::env::temp_dir().join(format!("verdict-rewrite-{}.md", std::process::id()));
    std::fs::write(&path, text)?;
    // The editor string may carry arguments (`code --wait`), so let the shell split it.
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("verdict-editor")
        .arg(&path)
        .status()
        .with_context(|| format!("could not start the editor `{editor}`"))?;
    let edited = std::fs::read_to_string(&path)?;
    let _ = std::fs::remove_file(&path);
    anyhow::ensure!(status.success(), "the editor `{editor}` exited with {status}; nothing saved");
    Ok(edited)
}

fn enter() -> anyhow::Result<Term> {
    enable_raw_mode().context("this terminal does not support raw mode")?;
    execute!(std::io::stdout(), EnterAlternateScreen)?;
    Ok(Terminal::new(CrosstermBackend::new(std::io::stdout()))?)
}

fn leave(terminal: &mut Term) {
    let _ = disable_raw_mode();
    let _ = execute!(terminal.backend_mut(), LeaveAlternateScreen);
    let _ = terminal.show_cursor();
}

/// Restores the terminal before the default hook prints the panic, so a bug never
/// leaves the user's shell in raw mode.
fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let _ = disable_raw_mode();
        let _ = execute!(std::io::stdout(), LeaveAlternateScreen, crossterm::cursor::Show);
        tracing::error!("panic: {info}");
        default(info);
    }));
}

#[cfg(test)]
mod testing;
