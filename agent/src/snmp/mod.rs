//! The SNMP poller: a source of the metrics data path. Targets come from etcd
//! (watched, so that added, changed and removed targets take effect without a
//! restart) or from the configuration file, and are polled with a credential of
//! the configuration file, never one of their own from etcd; the [`scheduler`] polls each on its own
//! schedule, a bounded number at a time, so that a device that does not answer
//! never delays another. Each poll becomes one `MetricBatch` of the device on the
//! raw metrics topic, with `system.uptime.ticks`, `snmp.up` and
//! `snmp.poll.duration.seconds`.

mod client;
mod etcd_targets;
pub(crate) mod fuzzing;
mod metric_sets;
mod poll_metrics;
mod samples;
mod scheduler;

use crate::config::{
    InvalidConfig, MetricSetDefinition, SnmpConfig, SnmpCredential, SnmpTarget, TargetCredential,
};
use crate::self_metrics::AgentMetrics;
use crate::spool::MetricSpool;
use client::{SnmpClient, VarBind};
use metric_sets::{
    IfColumn, InterfaceColumns, PollPlan, SYS_NAME, SYS_UPTIME, StorageColumn, TableSpec,
};
pub(crate) use poll_metrics::SnmpMetrics;
use samples::{Measurement, label_value, measurement, snmp_sample};
use scheduler::{PolledTarget, Scheduler};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};
use thiserror::Error;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use vigil_proto::labels::label;
use vigil_proto::v1::{MetricBatch, MetricKind, Resource, ResourceKind, Sample, ValueType, sample};
use vigil_runtime::secret::SecretError;

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
    #[error(
        "target `{target}`: {address} resolves to {resolved}, {refusal}; nothing was sent to it"
    )]
    AddressNotAllowed {
        target: String,
        address: String,
        resolved: IpAddr,
        /// Which credential, and the networks it may go to.
        refusal: String,
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
        "target `{target}` answered {request} of {oids} with error status {status} ({}) at index {index}",
        error_status_name(*status)
    )]
    ErrorStatus {
        target: String,
        request: &'static str,
        oids: String,
        status: u32,
        index: u32,
    },
}

/// The name of an SNMP error status (RFC 3416), with a hint where one helps.
fn error_status_name(status: u32) -> &'static str {
    match status {
        1 => "tooBig: lower `values_per_request`",
        2 => "noSuchName",
        3 => "badValue",
        4 => "readOnly",
        5 => "genErr",
        6 => "noAccess",
        16 => "authorizationError",
        _ => "other",
    }
}

impl PollError {
    /// A short, stable name of the kind of failure, for self-metrics labels.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::InvalidTarget { .. } | Self::Secret { .. } => "config",
            Self::AddressNotAllowed { .. } => "address_not_allowed",
            Self::Connect { .. } => "connect",
            Self::Timeout { .. } => "timeout",
            Self::Authentication { .. } => "authentication",
            Self::Protocol { .. } => "protocol",
            Self::ErrorStatus { .. } => "error_status",
        }
    }
}

/// Polls `target` once with a fresh session: every configured metric set (defined
/// sets looked up in `definitions`), plus `snmp.up` (1) and
/// `snmp.poll.duration.seconds`. A target that names a credential finds it in
/// `credentials`.
pub async fn poll_once(
    target: &SnmpTarget,
    credentials: &BTreeMap<String, SnmpCredential>,
    definitions: &BTreeMap<String, MetricSetDefinition>,
) -> Result<MetricBatch, PollError> {
    let invalid = |cause| PollError::InvalidTarget {
        target: target.name.clone(),
        cause,
    };
    target.validate("target").map_err(invalid)?;
    let credential = target
        .credential_in("target", credentials)
        .map_err(invalid)?;
    target
        .check_metric_sets("target", |name| definitions.contains_key(name))
        .map_err(invalid)?;
    let mut poller = TargetPoller::new(target.clone(), credential, definitions);
    let started = Instant::now();
    let time = crate::unix_nanos(SystemTime::now());
    let samples = poller.poll(time).await?;
    Ok(poller.finish(samples, true, started.elapsed(), time))
}

/// Polls one target and remembers what the device told about itself.
#[derive(Debug)]
struct TargetPoller {
    client: SnmpClient,
    plan: PollPlan,
    /// The device's sysName from the last poll that read it.
    sys_name: Option<String>,
}

impl TargetPoller {
    fn new(
        target: SnmpTarget,
        credential: TargetCredential,
        definitions: &BTreeMap<String, MetricSetDefinition>,
    ) -> Self {
        Self {
            plan: PollPlan::new(&target.metric_sets, definitions),
            client: SnmpClient::new(target, credential),
            sys_name: None,
        }
    }

    /// The samples of every configured metric set, all stamped `time`.
    async fn poll(&mut self, time: i64) -> Result<Vec<Sample>, PollError> {
        let scalar_oids = self.plan.scalar_oids();
        let varbinds = self.client.get(&scalar_oids).await?;
        let (mut samples, sys_name) = system_samples(&varbinds, time);
        if sys_name.is_some() {
            self.sys_name = sys_name;
        }
        for spec in &self.plan.scalars {
            if let Some((_, value)) = varbinds.iter().find(|(oid, _)| *oid == spec.oid) {
                samples.extend(spec.sample(value, time));
            }
        }
        let Self { client, plan, .. } = self;
        for table in &plan.tables {
            match table {
                TableSpec::Interfaces => {
                    let columns = walk_interfaces(client).await?;
                    samples.extend(metric_sets::interface_samples(&columns, time));
                }
                TableSpec::Storage => {
                    let oids: Vec<Vec<u64>> = StorageColumn::ALL
                        .iter()
                        .map(|column| column.oid())
                        .collect();
                    let walked = client.walk(&oids).await?;
                    let columns = StorageColumn::ALL.into_iter().zip(walked).collect();
                    samples.extend(metric_sets::storage_samples(&columns, time));
                }
                TableSpec::Processors => {
                    let walked = client.walk(&[metric_sets::processor_load_oid()]).await?;
                    if let Some(loads) = walked.first() {
                        samples.extend(metric_sets::processor_samples(loads, time));
                    }
                }
                TableSpec::Defined { set, table } => {
                    let oids = metric_sets::defined_table_oids(table);
                    let walked = client.walk(&oids).await?;
                    samples.extend(metric_sets::defined_table_samples(
                        set, table, &walked, time,
                    ));
                }
            }
        }
        Ok(samples)
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
        attributes.extend(target.labels.iter().map(|(name, value)| label(name, value)));
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

/// ifTable and ifXTable; the 32-bit counters only when some interface lacks the
/// 64-bit ones.
async fn walk_interfaces(client: &mut SnmpClient) -> Result<InterfaceColumns, PollError> {
    let mut columns = InterfaceColumns::new();
    let first: Vec<Vec<u64>> = IfColumn::FIRST.iter().map(|column| column.oid()).collect();
    columns.extend(IfColumn::FIRST.into_iter().zip(client.walk(&first).await?));
    if metric_sets::lacks_64_bit_counters(&columns) {
        let fallback: Vec<Vec<u64>> = IfColumn::FALLBACK
            .iter()
            .map(|column| column.oid())
            .collect();
        let walked = client.walk(&fallback).await?;
        columns.extend(IfColumn::FALLBACK.into_iter().zip(walked));
    }
    Ok(columns)
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

/// Where polled batches go, and what counts them.
#[derive(Debug, Clone)]
pub(crate) struct PollOutput {
    pub(crate) spool: MetricSpool,
    pub(crate) agent_metrics: AgentMetrics,
    pub(crate) metrics: SnmpMetrics,
}

/// Polls the targets of `config` until `shutdown`: those in etcd when
/// `config.etcd` is set (following every change), the file's otherwise. What the
/// configuration allows but should not do is logged first.
pub(crate) async fn run(config: SnmpConfig, output: PollOutput, shutdown: CancellationToken) {
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let mut scheduler = Scheduler::new(config.max_polls_in_flight, output, shutdown.clone());
    match &config.etcd {
        Some(etcd) => {
            etcd_targets::follow(
                etcd,
                &config.credentials,
                &config.metric_sets,
                &mut scheduler,
                &shutdown,
            )
            .await;
        }
        None => {
            let mut targets = Vec::new();
            for (index, target) in config.targets.iter().enumerate() {
                match target.credential_in(&format!("snmp.targets[{index}]"), &config.credentials) {
                    Ok(credential) => targets.push(PolledTarget::new(
                        target.clone(),
                        credential,
                        &config.metric_sets,
                    )),
                    Err(error) => {
                        tracing::error!(target_name = %target.name, %error, "SNMP target not polled");
                    }
                }
            }
            scheduler.apply(targets);
            shutdown.cancelled().await;
        }
    }
    scheduler.stop().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Community, IpNetwork, MetricSet, SnmpVersion};
    use samples::SnmpValue;
    use vigil_proto::labels::find;
    use vigil_runtime::SecretRef;

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
        let mut target =
            SnmpTarget::v2c("core1", "10.0.0.1:161", Community::Inline("public".into()));
        target.labels.insert("site".into(), "fra1".into());
        let credential = target.credential_in("", &BTreeMap::new()).unwrap();
        let mut poller = TargetPoller::new(target, credential, &BTreeMap::new());
        poller.sys_name = Some("core1.fra1".into());
        let batch = poller.finish(Vec::new(), false, Duration::from_millis(1500), 7);
        let resource = batch.resource.unwrap();
        assert_eq!(resource.id, "core1");
        assert_eq!(resource.kind, ResourceKind::Device as i32);
        assert_eq!(find(&resource.attributes, "address"), Some("10.0.0.1:161"));
        assert_eq!(find(&resource.attributes, "sysName"), Some("core1.fra1"));
        assert_eq!(find(&resource.attributes, "site"), Some("fra1"));
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
        let error = poll_once(&target, &BTreeMap::new(), &BTreeMap::new())
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "target `mute` did not answer GET of 1.3.6.1.2.1.1.3.0, 1.3.6.1.2.1.1.5.0 within 50ms (2 attempts; a wrong community looks the same)"
        );
    }

    #[tokio::test]
    async fn an_invalid_target_is_refused_before_polling() {
        let mut target = SnmpTarget::v2c("x", "127.0.0.1:1", Community::Inline("c".into()));
        target.metric_sets.clear();
        let error = poll_once(&target, &BTreeMap::new(), &BTreeMap::new())
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "target `x` is invalid: `target.metric_sets` must name at least one of system, if, host_resources, ucd or a defined set"
        );
    }

    #[tokio::test]
    async fn an_undefined_metric_set_is_refused_naming_it() {
        let mut target = SnmpTarget::v2c("x", "127.0.0.1:1", Community::Inline("c".into()));
        target.metric_sets = vec![MetricSet::named("chassis")];
        let error = poll_once(&target, &BTreeMap::new(), &BTreeMap::new())
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "target `x` is invalid: `target.metric_sets[0]` `chassis` is neither built in (system, if, host_resources, ucd) nor defined"
        );
    }

    /// A v2c credential whose community is in a file, sent only to `network`.
    fn credential_for(network: &str, community_file: &std::path::Path) -> SnmpCredential {
        SnmpCredential {
            version: SnmpVersion::V2c,
            community: Some(Community::Secret(SecretRef {
                file: Some(community_file.to_owned()),
                env: None,
            })),
            v3: None,
            allowed_networks: Some(vec![network.parse::<IpNetwork>().unwrap()]),
        }
    }

    /// What `socket` received within a short wait.
    fn received(socket: &std::net::UdpSocket) -> Option<Vec<u8>> {
        socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buffer = [0; 2048];
        let (length, _) = socket.recv_from(&mut buffer).ok()?;
        Some(buffer[..length].to_vec())
    }

    #[tokio::test]
    async fn a_named_credential_is_sent_only_where_its_networks_allow() {
        let dir = tempfile::tempdir().unwrap();
        let community_file = dir.path().join("community");
        std::fs::write(&community_file, "l0cal-s3cret\n").unwrap();
        let credentials = BTreeMap::from([
            (
                "loopback".to_owned(),
                credential_for("127.0.0.1/32", &community_file),
            ),
            (
                "lan".to_owned(),
                credential_for("10.0.0.0/8", &community_file),
            ),
        ]);
        let device = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = device.local_addr().unwrap().port();
        let mut target =
            SnmpTarget::with_credential("inside", format!("127.0.0.1:{port}"), "loopback");
        target.timeout = Duration::from_millis(50);
        target.retries = 0;
        target.metric_sets = vec![MetricSet::System];
        let error = poll_once(&target, &credentials, &BTreeMap::new())
            .await
            .unwrap_err();
        assert!(matches!(error, PollError::Timeout { .. }), "{error}");
        let request = received(&device).expect("a request to the allowed address");
        assert!(
            request.windows(12).any(|window| window == b"l0cal-s3cret"),
            "the request carries the credential's community"
        );

        // A name that resolves outside the credential's networks: refused before
        // anything is sent, naming target and credential.
        let mut target = SnmpTarget {
            name: "outside".into(),
            address: format!("localhost:{port}"),
            credential: Some("lan".into()),
            ..target
        };
        target.retries = 2;
        let error = poll_once(&target, &credentials, &BTreeMap::new())
            .await
            .unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("target `outside`: localhost:{port} resolves to ")),
            "{message}"
        );
        assert!(
            message.ends_with(", outside the `allowed_networks` of credential `lan` (10.0.0.0/8); nothing was sent to it"),
            "{message}"
        );
        assert_eq!(error.reason(), "address_not_allowed");
        assert_eq!(received(&device), None);
    }
}
