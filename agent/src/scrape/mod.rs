//! The scrape source of the agent: it reads Prometheus and OpenMetrics endpoints
//! and turns their expositions into metric batches, one per target and scrape.
//! [`exposition`] parses the bodies targets return; [`batch`] makes the batch of
//! one scrape, with the series Prometheus records per target and staleness
//! markers for the series that disappeared.

pub mod batch;
pub mod exposition;
