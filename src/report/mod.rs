//! Reports drawn from a run's numbers: training curves as images, and what the blind votes say
//! about the models.

pub mod plot;
pub mod review;

pub use plot::{Panel, PlotError, Series, training_panels, write_plot};
