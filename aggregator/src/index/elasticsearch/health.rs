//! Whether Elasticsearch answers, for the index stage's `/ready`: a small
//! request to the cluster every few seconds, beside the bulk writes of the data
//! path, marks the stage's `elasticsearch` connection up or down.

use super::BulkClient;
use reqwest::{Method, StatusCode};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use vigil_runtime::Connection;

/// How often the cluster is asked.
const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// How long it has to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

impl BulkClient {
    /// Keeps `connection` saying whether the cluster answers `GET
    /// _cluster/health` in time, until `shutdown`. An answer counts unless it
    /// says the credentials are wrong (401) or the cluster cannot serve (5xx);
    /// 403 counts, since writing documents needs no monitoring privilege.
    pub fn watch_connection(self, connection: Connection, shutdown: CancellationToken) {
        tokio::spawn(async move {
            loop {
                match self.probe().await {
                    Ok(()) => connection.set_up(),
                    Err(reason) => connection.set_down(reason),
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(PROBE_INTERVAL) => {}
                }
            }
        });
    }

    /// One health request; `Err` says why the cluster does not count as answering.
    async fn probe(&self) -> Result<(), String> {
        let endpoint = self.endpoint();
        let url = endpoint.url("_cluster/health");
        let request = endpoint.request(Method::GET, url).timeout(PROBE_TIMEOUT);
        let (status, _) = endpoint
            .exchange(request)
            .await
            .map_err(|error| format!("{} does not answer: {error}", self.url()))?;
        if status == StatusCode::UNAUTHORIZED || status.is_server_error() {
            return Err(format!("{} answers {status}", self.url()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::BulkClientConfig;

    #[tokio::test]
    async fn a_cluster_that_refuses_connections_is_down_with_its_address() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let client = BulkClient::new(BulkClientConfig::new(&url)).unwrap();
        let error = client.probe().await.unwrap_err();
        assert!(
            error.starts_with(&format!("{url}/ does not answer: ")),
            "{error}"
        );
    }
}
