//! verdict: a terminal workstation for preference data and DPO fine-tuning.
//!
//! The library holds everything; the `verdict` binary is a thin shell over [`cli`].

pub mod cli;
pub mod data;
pub mod domain;
pub mod guidelines;
pub mod jobs;
pub mod model;
pub mod qa;
pub mod report;
pub mod samples;
pub mod store;
pub mod table;
pub mod train;
pub mod tui;
