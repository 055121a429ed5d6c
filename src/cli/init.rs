//! `verdict init` and what a first run does: create the database, load guidelines,
//! seed the sample data.

use std::process::ExitCode;

use super::Cli;
use crate::guidelines;
use crate::samples;
use crate::store::{OpenMode, Store};

/// Opens the database, creating it and loading the guidelines when needed.
pub fn open_for_writing(cli: &Cli) -> anyhow::Result<(Store, bool)> {
    let existed = cli.db.exists();
    let mut store = Store::open(&cli.db, OpenMode::CreateIfMissing)?;
    let found = guidelines::discover(cli.guidelines.as_deref(), &cli.db)?;
    store.load_guidelines(&found)?;
    Ok((store, !existed))
}

pub fn init(cli: &Cli, with_samples: bool) -> anyhow::Result<ExitCode> {
    let (mut store, created) = open_for_writing(cli)?;
    println!("{} {}", if created { "created" } else { "opened" }, cli.db.display());
    println!("guidelines: {} version(s) stored", store.guideline_versions()?);
    if with_samples {
        let summary = store.import_records(&samples::records())?;
        println!(
            "samples: {} prompts, {} responses, {} judgments added ({} already present)",
            summary.prompts, summary.responses, summary.judgments, summary.duplicates
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `verdict` with no command: create and seed the database on first use, then show
/// what is in it and what to do next.
pub fn first_run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let (mut store, created) = open_for_writing(cli)?;
    if created && !cli.no_samples {
        let summary = store.import_records(&samples::records())?;
        println!(
            "created {} and seeded it with the sample data ({} prompts, {} labeled pairs)",
            cli.db.display(),
            summary.prompts,
            summary.judgments
        );
    }
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() && std::io::stdin().is_terminal() {
        // The model is needed for `g`; labeling is not, so a failed fetch only warns.
        if std::env::var_os("VERDICT_MODEL").is_none() {
            let default = crate::model::fetch::default_model_path()?;
            if !default.is_file() {
                if let Err(e) = crate::model::fetch::fetch_default(&super::fetch_progress) {
                    eprintln!("warning: {e}\nlabeling works without it; `g` (generate) needs a model");
                }
            }
        }
        let keys = crate::tui::config_dir().map(|d| d.join("keys.toml"));
        let keymap = match keys {
            Some(path) => crate::tui::keymap::KeyMap::load(&path)?,
            None => crate::tui::keymap::KeyMap::default(),
        };
        let app = crate::tui::App::new(store, &cli.annotator_name(), keymap)?;
        crate::tui::run(app)?;
        return Ok(ExitCode::SUCCESS);
    }
    // Not a terminal (a pipe, a script): say what is there instead of drawing.
    super::stats::print_table(&crate::qa::stats(&store)?);
    println!("\nNext: run `verdict` in a terminal to label, or `verdict --help` for every command.");
    Ok(ExitCode::SUCCESS)
}
