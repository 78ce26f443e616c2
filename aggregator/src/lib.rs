//! Vigil's stream stages, as a library the `vigil-aggregator` binary assembles
//! (and `vigil-all-in-one`, with the agent's sources, on one host):
//! `derive` (rates, KPIs and aggregates), `alert` (rules over metrics and logs,
//! alert lifecycle, pagers), `index` (everything into Elasticsearch), the rules
//! engine and its sources, the one consume loop the three stages share, and
//! the stage configuration.

pub mod alert;
pub mod config;
pub mod derive;
pub mod index;
pub mod rule_source;
mod stage;

pub use stage::StageError;
