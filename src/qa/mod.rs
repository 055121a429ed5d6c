//! Quality assurance: turning many annotators' verdicts into trustworthy pairs.

pub mod agreement;
pub mod arena;
pub mod assign;
pub mod compile;
pub mod pairing;
pub mod report;
pub mod resolve;
pub mod text;
pub mod winrate;

pub use resolve::{DecidedPair, Resolution, ResolvedPair, decide, resolve};

use crate::store::{Result, Store};

/// Every resolved pair in the store (adjudications, votes and rewrites applied).
pub fn resolved_pairs(store: &Store) -> Result<Vec<ResolvedPair>> {
    Ok(resolve(&store.active_judgments()?, &store.adjudications()?, &store.rewrites()?))
}
