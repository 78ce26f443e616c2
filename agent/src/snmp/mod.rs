//! The SNMP poller: a source of the metrics data path. Every target is polled by
//! its own task on its own interval, so a device that does not answer never delays
//! another; each poll becomes one `MetricBatch` of the device on the raw metrics
//! topic, including `snmp.up` and `snmp.poll.duration.seconds`.
//!
//! Targets come from the configuration file for now; a later version takes them
//! (and the OIDs to poll) from etcd and changes them without a restart.

mod client;
mod samples;

use crate::config::{InvalidConfig, MetricSet, SnmpTarget};
use crate::self_metrics::{AgentMetrics, PollOutcome};
use client::{Request, SnmpClient, VarBind};
use samples::{
    InterfaceColumns, Measurement, interface_samples, label_value, measurement, snmp_sample,
};
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime};
use thiserror::Error;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use vigil_proto::labels::label;
use vigil_proto::v1::{MetricBatch, MetricKind, Resource, ResourceKind, Sample, ValueType, sample};
use vigil_runtime::Publisher;
use vigil_runtime::secret::SecretError;

const SYS_UPTIME: &[u64] = &[1, 3, 6, 1, 2, 1, 1, 3, 0];
const SYS_NAME: &[u64] = &[1, 3, 6, 1, 2, 1, 1, 5, 0];
const IF_DESCR: &[u64] = &[1, 3, 6, 1, 2, 1, 2, 2, 1, 2];
const IF_IN_OCTETS: &[u64] = &[1, 3, 6, 1, 2, 1, 2, 2, 1, 10];
const IF_OUT_OCTETS: &[u64] = &[1, 3, 6, 1, 2, 1, 2, 2, 1, 16];
const IF_NAME: &[u64] = &[1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 1];
const IF_HC_IN_OCTETS: &[u64] = &[1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 6];
const IF_HC_OUT_OCTETS: &[u64] = &[1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 10];

/// Longest random delay of a target's first poll, so that targets configured
/// together do not all poll in the same instant.
const MAX_FIRST_POLL_JITTER: Duration = Duration::from_secs(5);

/// Why a poll of a target failed.
#[derive(Debug, Error)]
pub enum PollError {
    #[error("target `{target}` is invalid: {cause}")]
    InvalidTarget {
        target: String,
        cause: InvalidConfig,
    },
    #[error("target `{target}`: `{field}`: {cause}")]
    Secret {
        target: String,
        field: &'static str,
        cause: SecretError,
    },
    #[error("target `{target}`: no socket for {address}: {cause}")]
    Connect {
        target: String,
        address: String,
        cause: std::io::Error,
    },
    #[error(
        "target `{target}` did not answer {request} of {oids} within {timeout} ({attempts} attempts; {silent_when})"
    )]
    Timeout {
        target: String,
        request: &'static str,
        oids: String,
        timeout: String,
        attempts: u32,
        /// What else makes an agent silent: SNMP agents drop what they refuse.
        silent_when: &'static str,
    },
    #[error(
        "SNMPv3 authentication with target `{target}` failed for user `{user}`: {reason}; check the user, protocols and passwords"
    )]
    Authentication {
        target: String,
        user: String,
        reason: String,
    },
    #[error("target `{target}`: {request} of {oids} failed: {reason}")]
    Protocol {
        target: String,
        request: &'static str,
        oids: String,
        reason: String,
    },
    #[error(
        "target `{target}` answered {request} of {oids} with error status {status} at index {index}"
    )]
    ErrorStatus {
        target: String,
        request: &'static str,
        oids: String,
        status: u32,
        index: u32,
    },
}

/// Polls `target` once with a fresh session: every configured metric set, plus
/// `snmp.up` (1) and `snmp.poll.duration.seconds`.
pub async fn poll_once(target: &SnmpTarget) -> Result<MetricBatch, PollError> {
    target
        .validate("target")
        .map_err(|source| PollError::InvalidTarget {
            target: target.name.clone(),
            cause: source,
        })?;
    let mut poller = TargetPoller::new(target.clone());
    let started = Instant::now();
    let time = crate::unix_nanos(SystemTime::now());
    let samples = poller.poll(time).await?;
    Ok(poller.finish(samples, true, started.elapsed(), time))
}

/// Polls one target and remembers what the device told about itself.
#[derive(Debug)]
struct TargetPoller {
    client: SnmpClient,
    /// The device's sysName from the last poll that read it.
    sys_name: Option<String>,
}

impl TargetPoller {
    fn new(target: SnmpTarget) -> Self {
        Self {
            client: SnmpClient::new(target),
            sys_name: None,
        }
    }

    /// The samples of every configured metric set, all stamped `time`.
    async fn poll(&mut self, time: i64) -> Result<Vec<Sample>, PollError> {
        let mut sets = self.client.target().metric_sets.clone();
        sets.sort_unstable();
        sets.dedup();
        let mut samples = Vec::new();
        for set in sets {
            match set {
                MetricSet::System => {
                    let varbinds = self
                        .client
                        .request(Request::Get(&[SYS_UPTIME, SYS_NAME]))
                        .await?;
                    let (system, sys_name) = system_samples(&varbinds, time);
                    samples.extend(system);
                    if sys_name.is_some() {
                        self.sys_name = sys_name;
                    }
                }
                MetricSet::If => {
                    let columns = self.walk_interfaces().await?;
                    samples.extend(interface_samples(&columns, time));
                }
            }
        }
        Ok(samples)
    }

    async fn walk_interfaces(&mut self) -> Result<InterfaceColumns, PollError> {
        let mut columns = InterfaceColumns {
            descr: self.client.walk(IF_DESCR).await?,
            name: self.client.walk(IF_NAME).await?,
            hc_in_octets: self.client.walk(IF_HC_IN_OCTETS).await?,
            hc_out_octets: self.client.walk(IF_HC_OUT_OCTETS).await?,
            ..InterfaceColumns::default()
        };
        if columns.lacks_64_bit_counters() {
            columns.in_octets = self.client.walk(IF_IN_OCTETS).await?;
            columns.out_octets = self.client.walk(IF_OUT_OCTETS).await?;
        }
        Ok(columns)
    }

    /// The batch of one poll: `samples` plus `snmp.up` and the poll's duration.
    fn finish(&self, mut samples: Vec<Sample>, up: bool, took: Duration, time: i64) -> MetricBatch {
        let gauge = |value: f64, value_type: ValueType| Measurement {
            kind: MetricKind::Gauge,
            value: sample::Value::Gauge(value),
            value_type,
        };
        samples.push(snmp_sample(
            "snmp.up",
            Vec::new(),
            gauge(if up { 1.0 } else { 0.0 }, ValueType::Integer),
            "",
            "snmp",
            time,
        ));
        samples.push(snmp_sample(
            "snmp.poll.duration.seconds",
            Vec::new(),
            gauge(took.as_secs_f64(), ValueType::Float),
            "s",
            "snmp",
            time,
        ));
        let target = self.client.target();
        let mut attributes = vec![label("address", &target.address)];
        if let Some(sys_name) = &self.sys_name {
            attributes.push(label("sysName", sys_name));
        }
        MetricBatch {
            resource: Some(Resource {
                id: target.name.clone(),
                kind: ResourceKind::Device as i32,
                host_name: target.name.clone(),
                attributes,
            }),
            samples,
            producer: crate::PRODUCER.to_owned(),
        }
    }
}

/// `system.uptime.ticks` from sysUpTime, and sysName, out of a GET of both.
fn system_samples(varbinds: &[VarBind], time: i64) -> (Vec<Sample>, Option<String>) {
    let value_of = |oid: &[u64]| {
        varbinds
            .iter()
            .find(|(name, _)| name.as_slice() == oid)
            .map(|(_, value)| value)
    };
    let samples = value_of(SYS_UPTIME)
        .and_then(measurement)
        .map(|uptime| {
            snmp_sample(
                "system.uptime.ticks",
                Vec::new(),
                uptime,
                "cs",
                "system",
                time,
            )
        })
        .into_iter()
        .collect();
    let sys_name = value_of(SYS_NAME).and_then(label_value);
    (samples, sys_name)
}

/// Polls `target` every interval until `shutdown`, publishing one batch per poll;
/// a failed poll publishes `snmp.up` 0.
pub(crate) async fn run(
    target: SnmpTarget,
    publisher: Publisher,
    topic: String,
    metrics: AgentMetrics,
    shutdown: CancellationToken,
) {
    let first = Instant::now() + first_poll_jitter(&target);
    let mut ticker = tokio::time::interval_at(first, target.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut poller = TargetPoller::new(target.clone());
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let started = Instant::now();
        let time = crate::unix_nanos(SystemTime::now());
        let polled = tokio::select! {
            () = shutdown.cancelled() => return,
            polled = poller.poll(time) => polled,
        };
        let took = started.elapsed();
        let batch = match polled {
            Ok(samples) => {
                metrics.polled(&target.name, PollOutcome::Success);
                poller.finish(samples, true, took, time)
            }
            Err(error) => {
                metrics.polled(&target.name, PollOutcome::Failure);
                tracing::warn!(
                    target_name = %target.name,
                    address = %target.address,
                    took_ms = took.as_millis() as u64,
                    %error,
                    "SNMP poll failed"
                );
                poller.finish(Vec::new(), false, took, time)
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            published = publisher.publish_batch(&topic, &batch) => match published {
                Ok(()) => metrics.published(&topic),
                Err(error) => tracing::warn!(target_name = %target.name, %error, "SNMP batch not delivered"),
            },
        }
    }
}

/// A random delay below `MAX_FIRST_POLL_JITTER` and below the target's interval.
fn first_poll_jitter(target: &SnmpTarget) -> Duration {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write(target.name.as_bytes());
    let spread = MAX_FIRST_POLL_JITTER.min(target.interval).as_millis() as u64;
    Duration::from_millis(hasher.finish() % spread.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Community;
    use samples::SnmpValue;
    use vigil_proto::labels::find;

    #[test]
    fn uptime_and_sys_name_come_from_one_get() {
        let varbinds = vec![
            (SYS_UPTIME.to_vec(), SnmpValue::TimeTicks(4242)),
            (
                SYS_NAME.to_vec(),
                SnmpValue::OctetString(b"core1.fra1".to_vec()),
            ),
        ];
        let (samples, sys_name) = system_samples(&varbinds, 5);
        assert_eq!(sys_name.as_deref(), Some("core1.fra1"));
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].name, "system.uptime.ticks");
        assert_eq!(samples[0].value, Some(sample::Value::Gauge(4242.0)));
        assert_eq!(samples[0].value_type, ValueType::Timeticks as i32);
        assert_eq!(samples[0].metric_set, "system");

        let missing = vec![(SYS_UPTIME.to_vec(), SnmpValue::NoSuchObject)];
        assert_eq!(system_samples(&missing, 5), (Vec::new(), None));
    }

    #[test]
    fn every_batch_names_the_device_and_says_whether_it_answered() {
        let target = SnmpTarget::v2c("core1", "10.0.0.1:161", Community::Inline("public".into()));
        let mut poller = TargetPoller::new(target);
        poller.sys_name = Some("core1.fra1".into());
        let batch = poller.finish(Vec::new(), false, Duration::from_millis(1500), 7);
        let resource = batch.resource.unwrap();
        assert_eq!(resource.id, "core1");
        assert_eq!(resource.kind, ResourceKind::Device as i32);
        assert_eq!(find(&resource.attributes, "address"), Some("10.0.0.1:161"));
        assert_eq!(find(&resource.attributes, "sysName"), Some("core1.fra1"));
        let values: Vec<(&str, Option<sample::Value>)> = batch
            .samples
            .iter()
            .map(|s| (s.name.as_str(), s.value))
            .collect();
        assert_eq!(
            values,
            [
                ("snmp.up", Some(sample::Value::Gauge(0.0))),
                (
                    "snmp.poll.duration.seconds",
                    Some(sample::Value::Gauge(1.5))
                ),
            ]
        );
    }

    #[tokio::test]
    async fn a_silent_target_times_out_naming_target_and_oids() {
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut target = SnmpTarget::v2c(
            "mute",
            silent.local_addr().unwrap().to_string(),
            Community::Inline("public".into()),
        );
        target.timeout = Duration::from_millis(50);
        target.retries = 1;
        target.metric_sets = vec![MetricSet::System];
        let error = poll_once(&target).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "target `mute` did not answer GET of 1.3.6.1.2.1.1.3.0, 1.3.6.1.2.1.1.5.0 within 50ms (2 attempts; a wrong community looks the same)"
        );
    }

    #[tokio::test]
    async fn an_invalid_target_is_refused_before_polling() {
        let mut target = SnmpTarget::v2c("x", "127.0.0.1:1", Community::Inline("c".into()));
        target.metric_sets.clear();
        let error = poll_once(&target).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "target `x` is invalid: `target.metric_sets` must name at least one of system, if"
        );
    }

    #[test]
    fn the_first_poll_is_spread_within_the_interval() {
        let mut target = SnmpTarget::v2c("a", "h", Community::Inline("c".into()));
        target.interval = Duration::from_secs(1);
        for _ in 0..20 {
            assert!(first_poll_jitter(&target) < Duration::from_secs(1));
        }
    }
}
