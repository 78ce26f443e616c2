//! etcd access: connection settings, and a prefix watch that survives reconnects.
//!
//! Rules and SNMP targets live under an etcd prefix. A stage keeps the latest full
//! snapshot of its prefix; the watch task re-reads the prefix after every
//! reconnect, so a missed event can never leave a stage with a stale view, and
//! while etcd is unreachable the last snapshot simply stays in force.

use crate::secret::SecretRef;
use etcd_client::{
    Certificate, Client, ConnectOptions, EventType, GetOptions, Identity, TlsOptions, WatchOptions,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

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
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.endpoints.is_empty() {
            anyhow::bail!("`etcd.endpoints` must list at least one endpoint");
        }
        if !self.prefix.starts_with('/') {
            anyhow::bail!("`etcd.prefix` must start with `/`, got `{}`", self.prefix);
        }
        if self.username.is_some() != self.password.is_some() {
            anyhow::bail!("`etcd.username` and `etcd.password` go together");
        }
        Ok(())
    }

    /// The full key prefix for one kind of object, e.g. `rules` → `/vigil/rules/`.
    pub fn key_prefix(&self, kind: &str) -> String {
        format!("{}/{kind}/", self.prefix.trim_end_matches('/'))
    }

    /// Connects (lazily; the first request fails if etcd is unreachable).
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(10))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if let (Some(user), Some(password)) = (&self.username, &self.password) {
            options = options.with_user(user, password.resolve()?);
        }
        if let Some(tls) = &self.tls {
            let mut tls_options = TlsOptions::new();
            if let Some(ca) = &tls.ca_file {
                tls_options = tls_options.ca_certificate(Certificate::from_pem(std::fs::read(ca)?));
            }
            if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
                tls_options = tls_options.identity(Identity::from_pem(
                    std::fs::read(cert)?,
                    std::fs::read(key)?,
                ));
            }
            options = options.with_tls(tls_options);
        }
        Ok(Client::connect(&self.endpoints, Some(options)).await?)
    }

    /// Reads every key under `prefix`, returning keys relative to it and the revision.
    pub async fn read_prefix(client: &mut Client, prefix: &str) -> anyhow::Result<(Snapshot, i64)> {
        let response = client
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await?;
        let revision = response.header().map_or(0, |h| h.revision());
        let mut snapshot = Snapshot::new();
        for kv in response.kvs() {
            insert(&mut snapshot, prefix, kv.key(), kv.value());
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
    ) -> anyhow::Result<()> {
        let mut client = self.connect().await?;
        let (mut snapshot, revision) = Self::read_prefix(&mut client, prefix).await?;
        sender.send_replace(Some(Arc::new(snapshot.clone())));
        let mut stream = client
            .watch(
                prefix,
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(revision + 1),
                ),
            )
            .await?;
        while let Some(response) = stream.message().await? {
            if response.canceled() {
                anyhow::bail!(
                    "watch cancelled by etcd (compacted at {})",
                    response.compact_revision()
                );
            }
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                match event.event_type() {
                    EventType::Put => insert(&mut snapshot, prefix, kv.key(), kv.value()),
                    EventType::Delete => {
                        let key = String::from_utf8_lossy(kv.key());
                        snapshot.remove(key.strip_prefix(prefix).unwrap_or(&key));
                    }
                }
            }
            if !response.events().is_empty() {
                sender.send_replace(Some(Arc::new(snapshot.clone())));
            }
        }
        anyhow::bail!("watch stream ended")
    }
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
