//! Opening a large queue without waiting for all of it.
//!
//! Reading every prompt's counts takes hundreds of milliseconds at 100,000 prompts, and the
//! first frame needs only the rows on screen. So those rows are read one by one, every other
//! prompt starts as a placeholder (its id, in queue order, so positions and totals are right
//! at once), and a thread with its own connection reads the whole queue (`queue::load`) and
//! sends it back through a channel, as the generation and training jobs do. Keys that need
//! the whole queue (filters, search, verdicts and skips that look for the next open prompt)
//! wait for it, in the order they were pressed, while the screen keeps drawing; moving and
//! opening prompts do not wait.

use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;

use crossterm::event::KeyEvent;

use super::keymap::Action;
use super::queue::{self, Item};
use crate::jobs::{Job, Update, spawn};
use crate::store::{OpenMode, Result, Store};

/// How many rows are read before the first frame: from the top of the queue, and around
/// the prompt the annotator was on. A queue no longer than this is read whole at once.
pub const FIRST_PAGE: usize = 200;

/// The whole queue being read on its own thread.
pub struct QueueLoad {
    work: Job<(), Vec<Item>>,
    /// Prompts this process re-read after the thread started: the thread's copy of them
    /// may be older, so they are read again when it arrives.
    pub touched: BTreeSet<i64>,
    /// Keys that need the whole queue, in the order they were pressed.
    pub waiting: VecDeque<KeyEvent>,
    /// Whether this is a refresh (R): the rows on screen are whole, only older.
    pub refresh: bool,
}

impl QueueLoad {
    pub(super) fn start(path: PathBuf, annotator_id: i64) -> QueueLoad {
        let work = spawn("queue", move |_, _| {
            let store = Store::open(&path, OpenMode::MustExist)?;
            Ok(queue::load(&store, annotator_id)?)
        });
        QueueLoad { work, touched: BTreeSet::new(), waiting: VecDeque::new(), refresh: false }
    }

    /// The whole queue once the thread has sent it.
    pub(super) fn arrived(&mut self) -> Option<std::result::Result<Vec<Item>, String>> {
        match self.work.try_next()? {
            Update::Finished(result) => Some(result.map_err(|e| format!("{e:#}"))),
            Update::Event(()) => None,
        }
    }
}

/// The queue for the first frame: whole when it is small, else the first screen's rows with
/// a `QueueLoad` bringing the rest (a store the thread cannot open, such as an in-memory
/// one, is then read whole on the UI thread when the thread says so).
pub fn open(
    store: &Store,
    annotator_id: i64,
    cursor: Option<i64>,
    first_page: usize,
) -> Result<(Vec<Item>, Option<QueueLoad>)> {
    let order = queue::prompt_order(store, annotator_id)?;
    if order.len() <= first_page {
        return Ok((queue::load(store, annotator_id)?, None));
    }
    // Started first, so it reads while this thread draws.
    let load = QueueLoad::start(store.path().to_path_buf(), annotator_id);
    let around = cursor.and_then(|c| order.iter().position(|&id| id == c));
    let mut items: Vec<Item> = order.iter().map(|&id| Item::placeholder(id)).collect();
    for position in first_screen(order.len(), first_page, around) {
        items[position] = queue::load_item(store, annotator_id, order[position])?;
    }
    Ok((items, Some(load)))
}

/// Positions read before the first frame: the top `page`, and `page` around `around`.
fn first_screen(len: usize, page: usize, around: Option<usize>) -> BTreeSet<usize> {
    let mut positions: BTreeSet<usize> = (0..page.min(len)).collect();
    if let Some(at) = around {
        let start = at.saturating_sub(page / 2);
        positions.extend(start..(start + page).min(len));
    }
    positions
}

/// Whether an action reads the whole queue: the filters and the search narrow all of it,
/// and verdicts, skips, undo and generation move on to (or name) prompts anywhere in it.
pub fn needs_whole_queue(action: Action) -> bool {
    matches!(
        action,
        Action::FilterLanguage
            | Action::Last
            | Action::FilterDomain
            | Action::FilterStatus
            | Action::Search
            | Action::Cancel
            | Action::Skip
            | Action::NextPair
            | Action::PreviousPair
            | Action::LeftBetter
            | Action::RightBetter
            | Action::Tie
            | Action::BothBad
            | Action::Undo
            | Action::Refresh
            | Action::Generate
            | Action::GenerateAll
    )
}

#[cfg(test)]
#[path = "loading_tests.rs"]
mod tests;
