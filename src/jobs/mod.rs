//! Long work that runs off the UI thread: generation, training, the evaluation answers and
//! their implicit rewards. Each job opens its own store connection, writes results as they
//! finish, and reports progress through a callback of typed events. `spawn` starts any of them
//! on its own thread: the CLI waits on the job and draws a progress bar from its events, the TUI
//! polls the same events every tick. A cancel flag stops it at the next safe point.

pub mod answers;
pub mod generate;
pub mod rewards;
pub mod run_lock;
pub mod spawn;
pub mod train;
pub mod train_config;

pub use spawn::{Job, Update, spawn};
