//! Data in and out: TRL preference JSONL (standard and conversational), prompt lists,
//! language codes. Parsing lives here; writing to the store is the store's job.

pub mod export;
pub mod import;
pub mod language;
pub mod lines;
pub mod parse;

pub use parse::Format;
