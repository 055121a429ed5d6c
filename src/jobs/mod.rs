//! Long work that runs off the UI thread: generation, training, the evaluation answers and
//! their implicit rewards. Each job opens its own store connection, writes results as they
//! finish, and reports progress through a callback that the CLI turns into a progress bar and
//! the TUI into messages on a channel. A cancel flag stops it at the next safe point.

pub mod answers;
pub mod generate;
pub mod rewards;
pub mod run_lock;
pub mod train;
pub mod train_config;
