//! verdict: a terminal workstation for preference data and DPO fine-tuning.
