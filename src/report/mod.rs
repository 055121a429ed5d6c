//! Reports drawn from a run's numbers: training curves as images.

pub mod plot;

pub use plot::{Panel, PlotError, Series, training_panels, write_plot};
