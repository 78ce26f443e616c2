//! `vigil-aggregator setup`: what Elasticsearch and Kibana need before the index
//! stage writes its first document, installed from `dashboards/`.
//!
//! In order: index lifecycle policies, component templates (the mappings), index
//! templates (which compose them, with `data_stream` and the lifecycle policy), the
//! data streams themselves, and Kibana's saved objects. Every Elasticsearch object
//! carries a hash of its content in `_meta.vigil_content_hash`; an object whose hash
//! matches is left alone, so running setup again changes nothing, and an object of
//! an older release is replaced. `<index>@custom` component templates are created
//! empty and never changed: they are where a site adds its own mappings.
//!
//! A server without lifecycle policies or data streams (an Elasticsearch-compatible
//! server, or a cluster without the feature) stops setup with an error naming the
//! part, unless `skip_unsupported` is set: then the part is skipped, said so, and the
//! index templates are installed without it.
//!
//! `dashboards` reads the files; `elasticsearch_objects` installs the Elasticsearch
//! part through the requests of `elasticsearch_api`, `kibana_import` the Kibana part,
//! and `progress` reports each object and the totals.

mod dashboards;
mod elasticsearch_api;
mod elasticsearch_objects;
mod kibana_import;
mod progress;

pub use dashboards::Dashboards;

use super::http_client::HttpEndpoint;
use super::kibana::{KibanaClient, KibanaError};
use elasticsearch_objects::install_elasticsearch_objects;
use kibana_import::import_saved_objects;
use progress::write_totals;
use reqwest::{Method, StatusCode};
use std::io::Write;
use thiserror::Error;

/// A setup that did not finish.
#[derive(Debug, Error)]
pub enum SetupError {
    #[error("could not read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON: {source}")]
    InvalidJson {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path}: no file to install; expected lifecycle-policies/, component-templates/, index-templates/ and kibana/"
    )]
    Empty { path: String },
    #[error("request to {url} failed: {detail}")]
    Transport { url: String, detail: String },
    #[error("{what}: {method} {url} answered {status}: {snippet}")]
    Status {
        what: String,
        method: Method,
        url: String,
        status: StatusCode,
        snippet: String,
    },
    #[error(
        "{part}: the server does not support them ({method} {url} answered {status}: {snippet}); run setup with --skip-unsupported to install the rest without them"
    )]
    Unsupported {
        part: &'static str,
        method: Method,
        url: String,
        status: StatusCode,
        snippet: String,
    },
    #[error(
        "data stream {name}: an index named {name} already exists (created before setup ran); reindex its documents into the data stream and delete it, or configure another index name"
    )]
    IndexInTheWay { name: String },
    #[error(transparent)]
    Kibana(#[from] KibanaError),
    #[error("could not write progress: {0}")]
    Progress(#[from] std::io::Error),
}

/// What setup did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetupSummary {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    /// Parts the server does not support, skipped on request.
    pub skipped: Vec<&'static str>,
    /// Saved objects Kibana imported.
    pub saved_objects: usize,
}

/// Where setup installs.
#[derive(Debug)]
pub struct SetupTargets<'a> {
    /// The Elasticsearch cluster (`BulkClient::endpoint` of the index stage's client).
    pub elasticsearch: &'a HttpEndpoint,
    /// `None`: Kibana is not configured and its part is left out.
    pub kibana: Option<&'a KibanaClient>,
    /// Skip lifecycle policies and data streams on servers without them.
    pub skip_unsupported: bool,
}

/// Installs `dashboards` (already renamed for the configured indices), printing a
/// line per object to `progress`.
pub async fn install(
    targets: &SetupTargets<'_>,
    dashboards: &Dashboards,
    progress: &mut dyn Write,
) -> Result<SetupSummary, SetupError> {
    let mut summary = SetupSummary::default();
    writeln!(
        progress,
        "Elasticsearch at {}",
        targets.elasticsearch.base_url()
    )?;
    install_elasticsearch_objects(
        targets.elasticsearch,
        dashboards,
        targets.skip_unsupported,
        &mut summary,
        progress,
    )
    .await?;
    import_saved_objects(
        targets.kibana,
        &dashboards.saved_objects,
        &mut summary,
        progress,
    )
    .await?;
    write_totals(progress, &summary, targets.kibana.is_some())?;
    Ok(summary)
}

#[cfg(test)]
mod tests;
