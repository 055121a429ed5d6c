//! Long work that runs off the UI thread: generation (and, later, training). Each job
//! opens its own store connection, writes results as they finish, and reports progress
//! through a callback that the CLI turns into a progress bar and the TUI into messages
//! on a channel. A cancel flag stops it at the next safe point.

pub mod generate;
pub mod train;
