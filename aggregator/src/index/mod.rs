//! The index stage: the end of the data path, where logs, metrics and alert events
//! leave the bus as Elastic Common Schema documents for Elasticsearch and Kibana (or
//! NDJSON files in the all-in-one mode).
//!
//! - [`documents`] maps batches to documents with content-derived ids;
//! - [`DocumentSink`] writes them: [`BulkClient`] to Elasticsearch, with as many
//!   requests in flight as [`AdaptiveConcurrency`] allows, [`NdjsonSink`] to local
//!   files; both report in the terms of the sink contract ([`WriteReport`],
//!   [`SinkError`]);
//! - [`IndexStage`] consumes the bus, batches, writes, dead-letters and commits;
//! - [`setup`] installs what Elasticsearch and Kibana need before the first document:
//!   lifecycle policies, component and index templates, data streams and the saved
//!   objects of `dashboards/`.
//!
//! Dependencies run one way: the HTTP client (endpoint, credentials, TLS) and the
//! sink contract import nothing else of the stage; the bulk writer, Kibana and
//! `setup` build on the client, the two writers on the contract, and
//! [`DocumentSink`] and the stage on the writers.

mod concurrency;
mod config;
mod document_sink;
pub mod documents;
mod elasticsearch;
mod http_client;
pub mod kibana;
mod ndjson;
pub mod setup;
mod sink;
mod stage;

#[cfg(test)]
mod fake_elasticsearch;

pub use concurrency::{AdaptiveConcurrency, ConcurrencyMetrics, ConcurrencySettings, Signal};
pub use config::{
    ElasticsearchSection, IndexNamesSection, IndexSection, IndexSectionError, KibanaSection,
};
pub use document_sink::DocumentSink;
pub use documents::{Document, IndexNames, InvalidIndexName, MetricStream};
pub use elasticsearch::{BulkClient, BulkClientConfig};
pub use http_client::{BulkClientError, ClientCertificate, ElasticsearchAuth, HttpEndpoint};
pub use ndjson::NdjsonSink;
pub use sink::{ElasticsearchError, Outcome, SinkError, WriteReport};
pub use stage::{IndexStage, IndexStageConfig, IndexStageError};
