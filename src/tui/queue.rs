//! The queue: every prompt with its counts and labeling status for one annotator, and
//! the filters over it. Built from a handful of whole-table reads so it stays fast on
//! 100,000 prompts; `load_item` reads one prompt alone, for the first screen of a queue
//! that is still loading (see `loading`).

use std::collections::HashMap;

use crate::qa::pairing::{PastVerdict, next_pair};
use crate::qa::resolve::{PairVerdict, majority};
use crate::store::{ActiveJudgment, QueueRow, Result, Store};

/// Where a prompt stands for the annotator at the keyboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Fewer than two candidates: nothing to compare yet (and a single answer I have not rated).
    NeedsCandidates,
    /// I have pairs left to judge here.
    Open,
    /// I have judged every pair the scheme asks for, or rated the prompt's single answer.
    Done,
    /// Not read yet: the queue is still loading in the background.
    Loading,
}

/// One prompt as the queue shows it.
#[derive(Debug, Clone)]
pub struct Item {
    pub row: QueueRow,
    pub candidates: Vec<i64>,
    pub mine: Vec<PastVerdict>,
    pub all_judgments: usize,
    /// Active single-answer ratings of the prompt's answers: mine, and everyone's.
    pub my_ratings: usize,
    pub all_ratings: usize,
    /// Some pair of this prompt has split votes without a majority.
    pub disputed: bool,
    pub status: Status,
}

impl Item {
    /// A prompt known only by its id until the background load brings the rest.
    pub fn placeholder(prompt_id: i64) -> Item {
        Item {
            row: QueueRow {
                prompt_id,
                external_id: None,
                preview: String::new(),
                language: String::new(),
                domain: None,
                split: String::new(),
            },
            candidates: Vec::new(),
            mine: Vec::new(),
            all_judgments: 0,
            my_ratings: 0,
            all_ratings: 0,
            disputed: false,
            status: Status::Loading,
        }
    }

    pub fn next_pair(&self) -> Option<(i64, i64)> {
        next_pair(&self.candidates, &self.mine)
    }

    /// Sets the counts from the prompt's candidates, its active judgments, ordered by pair
    /// (as the store returns them), and its active ratings (mine, everyone's).
    fn count(
        &mut self,
        candidates: Vec<i64>,
        judgments: &[ActiveJudgment],
        ratings: (usize, usize),
        annotator_id: i64,
    ) {
        self.candidates = candidates;
        (self.my_ratings, self.all_ratings) = ratings;
        self.all_judgments = judgments.len();
        self.mine = judgments
            .iter()
            .filter(|j| j.annotator_id == annotator_id)
            .map(|j| PastVerdict { a: j.response_a, b: j.response_b, outcome: j.outcome })
            .collect();
        self.disputed = judgments
            .chunk_by(|x, y| (x.response_a, x.response_b) == (y.response_a, y.response_b))
            .any(|votes| votes.len() > 1 && majority(votes.iter().map(|j| j.outcome)) == PairVerdict::Disputed);
        self.refresh_status();
    }

    fn refresh_status(&mut self) {
        self.status = if self.candidates.len() == 1 && self.my_ratings > 0 {
            Status::Done
        } else if self.candidates.len() < 2 {
            Status::NeedsCandidates
        } else if self.next_pair().is_some() {
            Status::Open
        } else {
            Status::Done
        };
    }
}

/// The status filter's choices, cycled in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    All,
    Unlabeled,
    Disputed,
    Done,
}

impl StatusFilter {
    pub fn next(self) -> StatusFilter {
        match self {
            StatusFilter::All => StatusFilter::Unlabeled,
            StatusFilter::Unlabeled => StatusFilter::Disputed,
            StatusFilter::Disputed => StatusFilter::Done,
            StatusFilter::Done => StatusFilter::All,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            StatusFilter::All => "all",
            StatusFilter::Unlabeled => "unlabeled by me",
            StatusFilter::Disputed => "disputed",
            StatusFilter::Done => "done",
        }
    }
}

/// What the queue is narrowed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub language: Option<String>,
    pub domain: Option<String>,
    pub status: StatusFilter,
    pub search: String,
}

impl Default for Filter {
    fn default() -> Filter {
        Filter { language: None, domain: None, status: StatusFilter::All, search: String::new() }
    }
}

impl Filter {
    pub fn admits(&self, item: &Item) -> bool {
        self.language.as_ref().is_none_or(|l| *l == item.row.language)
            && self.domain.as_ref().is_none_or(|d| item.row.domain.as_ref() == Some(d))
            && match self.status {
                StatusFilter::All => true,
                StatusFilter::Unlabeled => item.status == Status::Open,
                StatusFilter::Disputed => item.disputed,
                StatusFilter::Done => item.status == Status::Done,
            }
            && (self.search.is_empty() || matches_search(item, &self.search))
    }
}

fn matches_search(item: &Item, search: &str) -> bool {
    let needle = search.to_lowercase();
    item.row.preview.to_lowercase().contains(&needle)
        || item.row.external_id.as_ref().is_some_and(|id| id.to_lowercase().contains(&needle))
}

/// Loads every prompt with its counts for `annotator_id`.
pub fn load(store: &Store, annotator_id: i64) -> Result<Vec<Item>> {
    let rows = store.queue_rows()?;
    // All three reads come ordered by prompt id, so each prompt's candidates and judgments
    // are the next run of rows: one merge pass, no maps.
    let responses = store.response_ids()?;
    let judgments = store.active_judgments()?;
    let ratings = store.thumb_counts(annotator_id, None)?;
    let (mut next_response, mut next_judgment) = (0, 0);
    let mut items: Vec<Item> = rows
        .into_iter()
        .map(|row| {
            let id = row.prompt_id;
            let candidates = run_of(&responses, &mut next_response, id, |r| r.0);
            let judgments = run_of(&judgments, &mut next_judgment, id, |j| j.prompt_id);
            let mut item = Item::placeholder(id);
            item.row = row;
            let rated = ratings.get(&id).copied().unwrap_or_default();
            item.count(candidates.iter().map(|r| r.1).collect(), judgments, rated, annotator_id);
            item
        })
        .collect();
    in_queue_order(store, annotator_id, &mut items, |i| i.row.prompt_id)?;
    Ok(items)
}

/// The rows of `sorted` (ordered by prompt id) that belong to `prompt_id`, starting the
/// search at `*next` and moving it past them.
fn run_of<'a, T>(sorted: &'a [T], next: &mut usize, prompt_id: i64, prompt_of: impl Fn(&T) -> i64) -> &'a [T] {
    while *next < sorted.len() && prompt_of(&sorted[*next]) < prompt_id {
        *next += 1;
    }
    let start = *next;
    while *next < sorted.len() && prompt_of(&sorted[*next]) == prompt_id {
        *next += 1;
    }
    &sorted[start..*next]
}

/// The id of every prompt in the order the queue lists them: cheap enough for the first
/// frame, where `load` is not.
pub fn prompt_order(store: &Store, annotator_id: i64) -> Result<Vec<i64>> {
    let mut ids = store.prompt_ids()?;
    in_queue_order(store, annotator_id, &mut ids, |&id| id)?;
    Ok(ids)
}

/// Sorts prompts (in id order) into queue order: an annotator's assigned prompts come
/// first, in assignment order; the rest follow.
fn in_queue_order<T>(store: &Store, annotator_id: i64, prompts: &mut [T], id: impl Fn(&T) -> i64) -> Result<()> {
    let assigned: HashMap<i64, usize> =
        store.assignments_of(annotator_id)?.into_iter().enumerate().map(|(position, id)| (id, position)).collect();
    if !assigned.is_empty() {
        // Stable: the unassigned prompts keep their id order.
        prompts.sort_by_key(|p| assigned.get(&id(p)).copied().unwrap_or(usize::MAX));
    }
    Ok(())
}

/// Reads one prompt and its counts; a placeholder if the prompt is gone.
pub fn load_item(store: &Store, annotator_id: i64, prompt_id: i64) -> Result<Item> {
    let mut item = Item::placeholder(prompt_id);
    if let Some(row) = store.queue_row(prompt_id)? {
        item.row = row;
        reload_item(store, annotator_id, &mut item)?;
    }
    Ok(item)
}

/// Re-reads one prompt's counts after a judgment, a rating, an undo or a rewrite.
pub fn reload_item(store: &Store, annotator_id: i64, item: &mut Item) -> Result<()> {
    let id = item.row.prompt_id;
    let candidates = store.response_ids_of(id)?;
    let rated = store.thumb_counts(annotator_id, Some(id))?.get(&id).copied().unwrap_or_default();
    item.count(candidates, &store.active_judgments_of(id)?, rated, annotator_id);
    Ok(())
}
