//! The `index` section of the aggregator's configuration file: deserialized with
//! the rest of the file, validated here, and turned into the index stage, the
//! Elasticsearch client and the Kibana settings that `setup` uses.

use super::kibana::KibanaConfig;
use super::{
    BulkClient, BulkClientConfig, BulkClientError, ClientCertificate, ConcurrencySettings,
    DocumentSink, ElasticsearchAuth, IndexNames, IndexStage, IndexStageConfig, IndexStageError,
};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
use vigil_config::InvalidSetting;
use vigil_runtime::{Bus, SecretRef, SelfMetrics};

/// Why the index stage or its client could not be built from the section.
#[derive(Debug, thiserror::Error)]
pub enum IndexSectionError {
    #[error("`index.elasticsearch`: {0}")]
    Client(#[from] BulkClientError),
    #[error(transparent)]
    Stage(#[from] IndexStageError),
}

/// Settings of the `index` stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexSection {
    /// Consumer group shared by all index instances.
    #[serde(default = "default_index_group")]
    pub group: String,
    /// The Elasticsearch cluster.
    pub elasticsearch: ElasticsearchSection,
    /// Index names per dataset.
    #[serde(default)]
    pub indices: IndexNamesSection,
    /// Most documents in one `_bulk` request.
    #[serde(default = "default_max_documents")]
    pub max_documents: usize,
    /// Most bytes of documents in one `_bulk` request.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// How long to wait for more messages before sending a partial bulk request.
    #[serde(default = "default_linger", with = "vigil_config::duration")]
    pub linger: Duration,
    /// Most `_bulk` requests in flight at once; the stage starts with one and adds
    /// more while Elasticsearch keeps up.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Kibana, where `setup` imports the saved objects of `dashboards/kibana`.
    pub kibana: Option<KibanaSection>,
    /// This stage's own `/metrics`, `/health` and `/ready` address, instead of
    /// the top-level `http.listen`.
    pub http: Option<crate::config::HttpSection>,
}

fn default_max_bytes() -> usize {
    5 * 1024 * 1024
}

fn default_max_in_flight() -> usize {
    4
}

/// How to reach Kibana.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KibanaSection {
    /// Base URL, for example `https://kibana.example.net:5601`.
    pub url: String,
    /// Kibana space to import into (the default space when absent).
    pub space: Option<String>,
    /// Basic-auth user; without one, Elasticsearch's credentials are used.
    pub username: Option<String>,
    /// Basic-auth password, from a file or an environment variable.
    pub password: Option<SecretRef>,
    /// API key, from a file or an environment variable.
    pub api_key: Option<SecretRef>,
    /// CA bundle for an `https://` URL with a private CA.
    pub ca_file: Option<PathBuf>,
}

fn default_index_group() -> String {
    "vigil-index".to_owned()
}

fn default_max_documents() -> usize {
    5000
}

fn default_linger() -> Duration {
    Duration::from_millis(200)
}

/// How to reach Elasticsearch.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchSection {
    /// Base URL, for example `https://es.example.net:9200`.
    pub url: String,
    /// Basic-auth user.
    pub username: Option<String>,
    /// Basic-auth password, from a file or an environment variable.
    pub password: Option<SecretRef>,
    /// API key (instead of basic auth), from a file or an environment variable.
    pub api_key: Option<SecretRef>,
    /// CA bundle for `https://` URLs with a private CA.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for a cluster that asks for one; needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of `cert_file`.
    pub key_file: Option<PathBuf>,
}

/// Index names per dataset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexNamesSection {
    #[serde(default = "default_logs_index")]
    pub logs: String,
    #[serde(default = "default_metrics_index")]
    pub metrics: String,
    #[serde(default = "default_alerts_index")]
    pub alerts: String,
}

impl Default for IndexNamesSection {
    fn default() -> Self {
        Self {
            logs: default_logs_index(),
            metrics: default_metrics_index(),
            alerts: default_alerts_index(),
        }
    }
}

fn default_logs_index() -> String {
    "vigil-logs".to_owned()
}

fn default_metrics_index() -> String {
    "vigil-metrics".to_owned()
}

fn default_alerts_index() -> String {
    "vigil-alerts".to_owned()
}

/// An API key wins over basic auth; a user without a password is no login.
fn auth(
    api_key: &Option<SecretRef>,
    username: &Option<String>,
    password: &Option<SecretRef>,
) -> ElasticsearchAuth {
    match (api_key, username, password) {
        (Some(key), _, _) => ElasticsearchAuth::ApiKey(key.clone()),
        (None, Some(username), Some(password)) => ElasticsearchAuth::Basic {
            username: username.clone(),
            password: password.clone(),
        },
        _ => ElasticsearchAuth::None,
    }
}

impl IndexSection {
    /// Credentials this section would send to Elasticsearch or Kibana without
    /// TLS; Kibana without credentials of its own uses Elasticsearch's.
    pub fn warnings(&self) -> Vec<String> {
        let elasticsearch = &self.elasticsearch;
        let elasticsearch_login =
            elasticsearch.api_key.is_some() || elasticsearch.password.is_some();
        let mut warnings: Vec<String> = vigil_runtime::plaintext::http_credentials(
            "index.elasticsearch",
            &elasticsearch.url,
            elasticsearch_login,
        )
        .into_iter()
        .collect();
        if let Some(kibana) = &self.kibana {
            let kibana_login = kibana.api_key.is_some() || kibana.password.is_some();
            warnings.extend(vigil_runtime::plaintext::http_credentials(
                "index.kibana",
                &kibana.url,
                kibana_login || elasticsearch_login,
            ));
        }
        warnings
    }

    /// Checks the values serde cannot; errors name the field.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if reqwest::Url::parse(&self.elasticsearch.url).is_err() {
            return Err(InvalidSetting::new(
                "index.elasticsearch.url",
                format!("is not a URL: `{}`", self.elasticsearch.url),
            ));
        }
        if self.max_documents == 0 {
            return Err(InvalidSetting::new(
                "index.max_documents",
                "must be positive",
            ));
        }
        if self.max_bytes == 0 {
            return Err(InvalidSetting::new("index.max_bytes", "must be positive"));
        }
        if self.max_in_flight == 0 {
            return Err(InvalidSetting::new(
                "index.max_in_flight",
                "must be at least 1",
            ));
        }
        if let Some(kibana) = &self.kibana {
            if reqwest::Url::parse(&kibana.url).is_err() {
                return Err(InvalidSetting::new(
                    "index.kibana.url",
                    format!("is not a URL: `{}`", kibana.url),
                ));
            }
            if kibana.password.is_some() && kibana.username.is_none() {
                return Err(InvalidSetting::new(
                    "index.kibana.password",
                    "needs `index.kibana.username`",
                ));
            }
        }
        if self.elasticsearch.password.is_some() && self.elasticsearch.username.is_none() {
            return Err(InvalidSetting::new(
                "index.elasticsearch.password",
                "needs `index.elasticsearch.username`",
            ));
        }
        match (&self.elasticsearch.cert_file, &self.elasticsearch.key_file) {
            (Some(_), None) => Err(InvalidSetting::new(
                "index.elasticsearch.cert_file",
                "needs `index.elasticsearch.key_file`",
            )),
            (None, Some(_)) => Err(InvalidSetting::new(
                "index.elasticsearch.key_file",
                "needs `index.elasticsearch.cert_file`",
            )),
            _ => Ok(()),
        }
    }

    /// The index stage writing to the configured Elasticsearch, subscribed on `bus`.
    pub fn stage(&self, bus: &Bus, metrics: &SelfMetrics) -> Result<IndexStage, IndexSectionError> {
        let config = IndexStageConfig {
            group: self.group.clone(),
            max_documents: self.max_documents,
            max_bytes: self.max_bytes,
            linger: self.linger,
        };
        Ok(IndexStage::new(
            bus,
            DocumentSink::Elasticsearch(self.bulk_client()?),
            self.index_names(),
            config,
            metrics,
        )?)
    }

    /// The configured index names.
    pub fn index_names(&self) -> IndexNames {
        IndexNames {
            logs: self.indices.logs.clone(),
            metrics: self.indices.metrics.clone(),
            alerts: self.indices.alerts.clone(),
        }
    }

    /// The client of the configured Elasticsearch.
    pub fn bulk_client(&self) -> Result<BulkClient, IndexSectionError> {
        let elasticsearch = &self.elasticsearch;
        Ok(BulkClient::new(BulkClientConfig {
            auth: auth(
                &elasticsearch.api_key,
                &elasticsearch.username,
                &elasticsearch.password,
            ),
            ca_file: elasticsearch.ca_file.clone(),
            client_certificate: self.client_certificate(),
            concurrency: ConcurrencySettings {
                max: self.max_in_flight,
                ..ConcurrencySettings::default()
            },
            ..BulkClientConfig::new(&elasticsearch.url)
        })?)
    }

    /// The client certificate for Elasticsearch, when both its files are set.
    fn client_certificate(&self) -> Option<ClientCertificate> {
        let elasticsearch = &self.elasticsearch;
        Some(ClientCertificate {
            cert_file: elasticsearch.cert_file.clone()?,
            key_file: elasticsearch.key_file.clone()?,
        })
    }

    /// The configured Kibana, if any; without credentials of its own it logs in as
    /// Elasticsearch does.
    pub fn kibana(&self) -> Option<KibanaConfig> {
        let kibana = self.kibana.as_ref()?;
        let own = auth(&kibana.api_key, &kibana.username, &kibana.password);
        let elasticsearch = &self.elasticsearch;
        Some(KibanaConfig {
            url: kibana.url.clone(),
            auth: match own {
                ElasticsearchAuth::None => auth(
                    &elasticsearch.api_key,
                    &elasticsearch.username,
                    &elasticsearch.password,
                ),
                own => own,
            },
            ca_file: kibana.ca_file.clone().or(elasticsearch.ca_file.clone()),
            space: kibana.space.clone(),
        })
    }
}

#[cfg(test)]
mod tests;
