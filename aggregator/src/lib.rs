//! Vigil's stream stages, as a library the `vigil-aggregator` binary assembles:
//! `alert` (rules over metrics and logs, alert lifecycle, pagers), `index`
//! (everything into Elasticsearch), the rules engine and its sources, the stage
//! configuration, and the all-in-one mode that runs the whole data path in one
//! process.

pub mod alert;
pub mod all_in_one;
pub mod config;
pub mod derive;
pub mod index;
pub mod rule_source;
pub mod rules;
pub mod series_identity;
