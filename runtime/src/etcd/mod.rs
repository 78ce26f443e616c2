//! etcd access: connection settings, and a prefix watch that survives reconnects.
//!
//! Rules and SNMP targets live under an etcd prefix. A stage keeps the latest full
//! snapshot of its prefix; the watch task re-reads the prefix after every
//! reconnect, so a missed event can never leave a stage with a stale view, and
//! while etcd is unreachable the last snapshot simply stays in force.

mod client;

pub use client::{EtcdClient, EtcdError, KeyValue, PrefixWatch, TxnWrite, WatchEvent};

use crate::secret::SecretRef;
use client::ClientTls;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Why etcd settings cannot be used; each names its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtcdSettingsError {
    #[error("`etcd.endpoints` must list at least one endpoint")]
    NoEndpoints,
    #[error("`etcd.prefix` must start with `/`, got `{0}`")]
    RelativePrefix(String),
    #[error("`etcd.username` and `etcd.password` go together")]
    UserWithoutPassword,
}

/// How to reach etcd.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdSettings {
    /// Client URLs, for example `http://10.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Key prefix under which this deployment keeps its configuration.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// User name, when etcd authentication is on.
    pub username: Option<String>,
    /// Password for `username`, from a file or an environment variable.
    pub password: Option<SecretRef>,
    /// TLS to etcd (use `https://` endpoints).
    pub tls: Option<EtcdTls>,
}

/// TLS files for etcd.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

fn default_prefix() -> String {
    "/vigil".to_owned()
}

/// The keys under a watched prefix (relative to it) and their values.
pub type Snapshot = BTreeMap<String, String>;

impl EtcdSettings {
    /// Settings for one endpoint with the given prefix.
    pub fn new(endpoint: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            endpoints: vec![endpoint.into()],
            prefix: prefix.into(),
            username: None,
            password: None,
            tls: None,
        }
    }

    /// Checks what can be checked without connecting; errors name the field.
    pub fn validate(&self) -> Result<(), EtcdSettingsError> {
        if self.endpoints.is_empty() {
            return Err(EtcdSettingsError::NoEndpoints);
        }
        if !self.prefix.starts_with('/') {
            return Err(EtcdSettingsError::RelativePrefix(self.prefix.clone()));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err(EtcdSettingsError::UserWithoutPassword);
        }
        Ok(())
    }

    /// The full key prefix for one kind of object, e.g. `rules` → `/vigil/rules/`.
    pub fn key_prefix(&self, kind: &str) -> String {
        format!("{}/{kind}/", self.prefix.trim_end_matches('/'))
    }

    /// A client for these settings; authenticates first when a user is set.
    pub async fn connect(&self) -> Result<EtcdClient, EtcdError> {
        let password = match &self.password {
            Some(password) => Some(password.resolve().map_err(EtcdError::Password)?),
            None => None,
        };
        let credentials = self.username.as_deref().zip(password.as_deref());
        let mut tls = ClientTls::default();
        if let Some(files) = &self.tls {
            tls.ca_pem = files.ca_file.as_deref().map(read_tls_file).transpose()?;
            if let (Some(cert), Some(key)) = (&files.cert_file, &files.key_file) {
                let mut identity = read_tls_file(cert)?;
                identity.push(b'\n');
                identity.extend(read_tls_file(key)?);
                tls.identity_pem = Some(identity);
            }
        }
        EtcdClient::connect(&self.endpoints, credentials, tls).await
    }

    /// Reads every key under `prefix`, returning keys relative to it and the revision.
    pub async fn read_prefix(
        client: &EtcdClient,
        prefix: &str,
    ) -> Result<(Snapshot, i64), EtcdError> {
        let (pairs, revision) = client.get_prefix(prefix).await?;
        let mut snapshot = Snapshot::new();
        for pair in pairs {
            insert(&mut snapshot, prefix, &pair.key, &pair.value);
        }
        Ok((snapshot, revision))
    }

    /// Watches `prefix` until `shutdown`, publishing every new full snapshot.
    ///
    /// The receiver starts with `None` until the first read succeeds. Connection
    /// failures are logged and retried with backoff; the last snapshot stays.
    pub fn watch_prefix(
        &self,
        prefix: String,
        shutdown: CancellationToken,
    ) -> watch::Receiver<Option<Arc<Snapshot>>> {
        let (sender, receiver) = watch::channel(None);
        let settings = self.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                let outcome = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    outcome = settings.follow(&prefix, &sender) => outcome,
                };
                if let Err(error) = outcome {
                    tracing::warn!(%prefix, %error, retry_in = ?backoff, "etcd watch interrupted; keeping the last configuration");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        });
        receiver
    }

    /// One connection's worth of watching: read, then apply events until an error.
    async fn follow(
        &self,
        prefix: &str,
        sender: &watch::Sender<Option<Arc<Snapshot>>>,
    ) -> Result<(), EtcdError> {
        let client = self.connect().await?;
        let (mut snapshot, revision) = Self::read_prefix(&client, prefix).await?;
        sender.send_replace(Some(Arc::new(snapshot.clone())));
        let mut watch = client.watch_prefix(prefix, revision + 1).await?;
        while let Some(events) = watch.next().await? {
            for event in &events {
                match event {
                    WatchEvent::Put(pair) => insert(&mut snapshot, prefix, &pair.key, &pair.value),
                    WatchEvent::Delete { key } => {
                        let key = String::from_utf8_lossy(key);
                        snapshot.remove(key.strip_prefix(prefix).unwrap_or(&key));
                    }
                }
            }
            if !events.is_empty() {
                sender.send_replace(Some(Arc::new(snapshot.clone())));
            }
        }
        Err(EtcdError::WatchEnded {
            prefix: prefix.to_owned(),
        })
    }
}

fn read_tls_file(path: &std::path::Path) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(path).map_err(|error| EtcdError::TlsFile {
        path: path.display().to_string(),
        detail: error.to_string(),
    })
}

fn insert(snapshot: &mut Snapshot, prefix: &str, key: &[u8], value: &[u8]) {
    let key = String::from_utf8_lossy(key);
    let relative = key.strip_prefix(prefix).unwrap_or(&key).to_owned();
    snapshot.insert(relative, String::from_utf8_lossy(value).into_owned());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_prefixes_and_validation() {
        let settings = EtcdSettings::new("http://127.0.0.1:2379", "/vigil/");
        assert_eq!(settings.key_prefix("rules"), "/vigil/rules/");
        let bad = EtcdSettings::new("http://127.0.0.1:2379", "vigil");
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "`etcd.prefix` must start with `/`, got `vigil`"
        );
    }
}
