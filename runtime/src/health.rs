//! Readiness of a process, as `/ready` reports it: the process has started, and
//! every peer it depends on (Kafka, Elasticsearch) answers now. Each peer is a
//! [`Connection`] that whoever watches it marks up or down; the same state is
//! exposed as the gauge `vigil_connection_up{peer}`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The label of the connection gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: &'static str,
}

/// Readiness of a process: false until its stages report they are running, and
/// while any of its connections is down.
#[derive(Debug, Clone, Default)]
pub struct Health {
    started: Arc<AtomicBool>,
    /// Each peer, with why it is down (`None`: up).
    connections: Arc<Mutex<BTreeMap<&'static str, Option<String>>>>,
    gauges: Family<PeerLabels, Gauge>,
}

/// What `/ready` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// The process has not finished starting.
    Starting,
    /// These peers are down, each with why.
    Down(Vec<(&'static str, String)>),
}

impl Health {
    /// Says whether the process has started; readiness also needs every connection up.
    pub fn set_ready(&self, ready: bool) {
        self.started.store(ready, Ordering::Relaxed);
    }

    /// Started, and every connection up.
    pub fn is_ready(&self) -> bool {
        self.readiness() == Readiness::Ready
    }

    /// What `/ready` answers now.
    pub fn readiness(&self) -> Readiness {
        let connections = self.lock();
        let down: Vec<(&'static str, String)> = connections
            .iter()
            .filter_map(|(peer, down)| down.as_ref().map(|reason| (*peer, reason.clone())))
            .collect();
        if !down.is_empty() {
            Readiness::Down(down)
        } else if self.started.load(Ordering::Relaxed) {
            Readiness::Ready
        } else {
            Readiness::Starting
        }
    }

    /// A connection to `peer` that the process needs to be ready, down until it
    /// is first marked up.
    pub fn connection(&self, peer: &'static str) -> Connection {
        let connection = Connection {
            peer,
            health: self.clone(),
        };
        connection.set_down("not connected yet");
        connection
    }

    /// The gauge family `connection_up{peer}`, for the process's registry.
    pub fn connection_gauges(&self) -> Family<PeerLabels, Gauge> {
        self.gauges.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Option<String>>> {
        self.connections.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One peer a process depends on; cheap to clone.
#[derive(Debug, Clone)]
pub struct Connection {
    peer: &'static str,
    health: Health,
}

impl Connection {
    /// The peer's name, e.g. `kafka`.
    pub fn peer(&self) -> &'static str {
        self.peer
    }

    /// The peer answered; logs when it was down before.
    pub fn set_up(&self) {
        let previous = self.health.lock().insert(self.peer, None);
        if let Some(Some(reason)) = previous {
            tracing::info!(peer = self.peer, was = %reason, "connection up");
        }
        self.gauge().set(1);
    }

    /// The peer did not answer, for `reason`; logs when it was up before.
    pub fn set_down(&self, reason: impl std::fmt::Display) {
        let reason = reason.to_string();
        let previous = self.health.lock().insert(self.peer, Some(reason.clone()));
        if let Some(None) = previous {
            tracing::warn!(peer = self.peer, %reason, "connection down");
        }
        self.gauge().set(0);
    }

    /// Whether the peer answered last time it was asked.
    pub fn is_up(&self) -> bool {
        self.health
            .lock()
            .get(self.peer)
            .is_some_and(|down| down.is_none())
    }

    fn gauge(&self) -> Gauge {
        self.health
            .gauges
            .get_or_create(&PeerLabels { peer: self.peer })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_ready_only_while_started_with_every_connection_up() {
        let health = Health::default();
        let kafka = health.connection("kafka");
        let elasticsearch = health.connection("elasticsearch");
        health.set_ready(true);
        assert_eq!(
            health.readiness(),
            Readiness::Down(vec![
                ("elasticsearch", "not connected yet".to_owned()),
                ("kafka", "not connected yet".to_owned()),
            ])
        );
        kafka.set_up();
        elasticsearch.set_up();
        assert!(health.is_ready());
        kafka.set_down("all brokers down");
        assert_eq!(
            health.readiness(),
            Readiness::Down(vec![("kafka", "all brokers down".to_owned())])
        );
        assert_eq!(
            health
                .connection_gauges()
                .get_or_create(&PeerLabels { peer: "kafka" })
                .get(),
            0
        );
        kafka.set_up();
        assert!(health.is_ready());
        assert_eq!(
            health
                .connection_gauges()
                .get_or_create(&PeerLabels { peer: "kafka" })
                .get(),
            1
        );
    }

    #[test]
    fn a_process_without_connections_is_ready_once_started() {
        let health = Health::default();
        assert_eq!(health.readiness(), Readiness::Starting);
        health.set_ready(true);
        assert!(health.is_ready());
    }
}
