//! Quality assurance: turning many annotators' verdicts into trustworthy pairs.

pub mod agreement;
pub mod arena;
pub mod assign;
pub mod compile;
pub mod pairing;
pub mod report;
pub mod resolve;
pub mod run_set;
pub mod text;
pub mod thumbs;
pub mod winrate;

pub use resolve::{DecidedPair, Resolution, ResolvedPair, decide, resolve};

use crate::store::{Result, Store};

/// Every resolved pair in the store (adjudications, votes and rewrites applied).
pub fn resolved_pairs(store: &Store) -> Result<Vec<ResolvedPair>> {
    Ok(resolve(&store.active_judgments()?, &store.adjudications()?, &store.rewrites()?))
}

/// What `verdict stats` shows: the store's counts, with the pairs resolved by this module's rule.
pub fn stats(store: &Store) -> Result<crate::store::Stats> {
    store.stats_with(&|store, judgments| {
        let pairs = resolve(judgments, &store.adjudications()?, &store.rewrites()?);
        Ok(pairs.into_iter().map(|p| (p.prompt_id, p.chosen, p.rejected)).collect())
    })
}
