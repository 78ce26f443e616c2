//! SNMP targets and metric sets from etcd: the agent watches
//! `<prefix>/snmp/targets/<name>` and `<prefix>/snmp/metric_sets/<name>` (YAML or
//! JSON values) and hands every change to the scheduler, so that added, changed and
//! removed targets take effect within one interval, without a restart.
//!
//! Each entry stands alone: an invalid one is rejected with a message naming its
//! key and field, and if it was valid before, its last good version stays in
//! force; every other entry keeps polling.
//!
//! A target in etcd names one of the credentials of the agent's configuration
//! file and carries no `community` or `v3` of its own: whoever can write the
//! prefix chooses the address, and would otherwise have the agent read a local
//! secret file or variable of their choice and send it there. Such an entry is
//! refused before anything in it is resolved. While etcd is unreachable the watch
//! keeps the last snapshot, so the last configuration keeps running.

use super::scheduler::{PolledTarget, Scheduler};
use crate::config::{MetricSet, MetricSetDefinition, SnmpCredential, SnmpTarget, TargetCredential};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use tokio_util::sync::CancellationToken;
use vigil_runtime::etcd::{EtcdSettings, Snapshot};

const TARGETS: &str = "targets/";
const METRIC_SETS: &str = "metric_sets/";

/// Follows the SNMP keys in etcd until `shutdown`, applying each new snapshot;
/// `credentials` are those of the configuration file, which targets name, and
/// `file_sets` its metric sets, which etcd's may replace.
pub(crate) async fn follow(
    settings: &EtcdSettings,
    credentials: &BTreeMap<String, SnmpCredential>,
    file_sets: &BTreeMap<String, MetricSetDefinition>,
    scheduler: &mut Scheduler,
    shutdown: &CancellationToken,
) {
    let prefix = settings.key_prefix("snmp");
    tracing::info!(%prefix, endpoints = ?settings.endpoints, "SNMP targets come from etcd");
    let mut snapshots = settings.watch_prefix(prefix.clone(), shutdown.clone());
    let mut entries = EtcdEntries::new(prefix, credentials.clone(), file_sets.clone());
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = snapshots.changed() => if changed.is_err() { return },
        }
        let Some(snapshot) = snapshots.borrow_and_update().clone() else {
            continue;
        };
        let report = entries.update(&snapshot);
        for (key, message) in &report.newly_rejected {
            tracing::warn!(key = %key, "{message}; the other SNMP targets keep polling");
        }
        for key in &report.accepted_again {
            tracing::info!(key = %key, "SNMP configuration entry in etcd accepted again");
        }
        scheduler.metrics().set_rejected(entries.rejected.len());
        scheduler.apply(entries.targets());
    }
}

/// What changed in the rejections of one update.
#[derive(Debug, Default, PartialEq, Eq)]
struct UpdateReport {
    /// Full key and message of entries rejected now and not before (or for
    /// another reason).
    newly_rejected: Vec<(String, String)>,
    /// Full keys of entries rejected before and valid (or gone) now.
    accepted_again: Vec<String>,
}

/// The valid SNMP entries of etcd, kept entry by entry.
#[derive(Debug)]
struct EtcdEntries {
    /// The watched prefix, e.g. `/vigil/snmp/`, to name keys in full.
    prefix: String,
    /// The credentials of the configuration file, which targets name.
    credentials: BTreeMap<String, SnmpCredential>,
    file_sets: BTreeMap<String, MetricSetDefinition>,
    /// Last good metric set of each key, by set name.
    sets: BTreeMap<String, MetricSetDefinition>,
    /// Last good target of each key, with its credential, by relative key.
    targets: BTreeMap<String, (SnmpTarget, TargetCredential)>,
    /// Rejected entries by full key, with their messages.
    rejected: BTreeMap<String, String>,
}

impl EtcdEntries {
    fn new(
        prefix: String,
        credentials: BTreeMap<String, SnmpCredential>,
        file_sets: BTreeMap<String, MetricSetDefinition>,
    ) -> Self {
        Self {
            prefix,
            credentials,
            file_sets,
            sets: BTreeMap::new(),
            targets: BTreeMap::new(),
            rejected: BTreeMap::new(),
        }
    }

    /// Takes in a full snapshot of the prefix.
    fn update(&mut self, snapshot: &Snapshot) -> UpdateReport {
        let mut rejected = BTreeMap::new();
        let mut reject = |key: &str, problem: String, kept: bool| {
            let keeping = if kept {
                "; its previous version stays in force"
            } else {
                ""
            };
            let full_key = format!("{}{key}", self.prefix);
            let message = format!("etcd key `{full_key}`: {problem}{keeping}");
            rejected.insert(full_key, message);
        };

        self.sets
            .retain(|name, _| snapshot.contains_key(&format!("{METRIC_SETS}{name}")));
        for (key, text) in snapshot {
            let Some(name) = key.strip_prefix(METRIC_SETS) else {
                continue;
            };
            let parsed = if MetricSet::BUILT_IN.contains(&name) {
                Err("redefines a built-in metric set".to_owned())
            } else {
                parse::<MetricSetDefinition>(text).and_then(|definition| {
                    definition
                        .validate("")
                        .map(|()| definition)
                        .map_err(|error| error.to_string())
                })
            };
            match parsed {
                Ok(definition) => {
                    self.sets.insert(name.to_owned(), definition);
                }
                Err(problem) => reject(key, problem, self.sets.contains_key(name)),
            }
        }
        let definitions = self.definitions();

        self.targets.retain(|key, _| snapshot.contains_key(key));
        let mut names: BTreeMap<String, &str> = BTreeMap::new();
        for (key, text) in snapshot {
            let Some(key_name) = key.strip_prefix(TARGETS) else {
                if !key.starts_with(METRIC_SETS) {
                    reject(
                        key,
                        format!("is neither under `{TARGETS}` nor under `{METRIC_SETS}`"),
                        false,
                    );
                }
                continue;
            };
            let parsed = parse::<SnmpTarget>(text).and_then(|mut target| {
                if target.name.is_empty() {
                    key_name.clone_into(&mut target.name);
                }
                refuse_own_credential(&target, &self.credentials)?;
                target
                    .validate("")
                    .and_then(|()| target.credential_in("", &self.credentials))
                    .and_then(|credential| {
                        target
                            .check_metric_sets("", |name| definitions.contains_key(name))
                            .map(|()| (target, credential))
                    })
                    .map_err(|error| error.to_string())
            });
            let parsed = parsed.and_then(|(target, credential)| match names.get(&target.name) {
                Some(other) => Err(format!(
                    "`name` `{}` is used by the target at `{}{other}`",
                    target.name, self.prefix
                )),
                None => Ok((target, credential)),
            });
            match parsed {
                Ok((target, credential)) => {
                    names.insert(target.name.clone(), key);
                    self.targets.insert(key.clone(), (target, credential));
                }
                Err(problem) => {
                    // The last good version stays only while its sets still exist.
                    let kept = self.targets.get(key).is_some_and(|(target, _)| {
                        target
                            .check_metric_sets("", |name| definitions.contains_key(name))
                            .is_ok()
                            && !names.contains_key(&target.name)
                    });
                    if kept {
                        if let Some((target, _)) = self.targets.get(key) {
                            names.insert(target.name.clone(), key);
                        }
                    } else {
                        self.targets.remove(key);
                    }
                    reject(key, problem, kept);
                }
            }
        }

        let report = UpdateReport {
            newly_rejected: rejected
                .iter()
                .filter(|(key, message)| self.rejected.get(*key) != Some(message))
                .map(|(key, message)| (key.clone(), message.clone()))
                .collect(),
            accepted_again: self
                .rejected
                .keys()
                .filter(|key| !rejected.contains_key(*key))
                .cloned()
                .collect(),
        };
        self.rejected = rejected;
        report
    }

    /// Metric sets of the file, replaced by etcd's of the same name.
    fn definitions(&self) -> BTreeMap<String, MetricSetDefinition> {
        let mut definitions = self.file_sets.clone();
        definitions.extend(self.sets.clone());
        definitions
    }

    /// Every target in force, with the definitions of its sets.
    fn targets(&self) -> Vec<PolledTarget> {
        let definitions = self.definitions();
        self.targets
            .values()
            .map(|(target, credential)| {
                PolledTarget::new(target.clone(), credential.clone(), &definitions)
            })
            .collect()
    }
}

/// Refuses a target that brings its own `community` or `v3`, or names no
/// credential: a target in etcd is polled only with one of `credentials`.
fn refuse_own_credential(
    target: &SnmpTarget,
    credentials: &BTreeMap<String, SnmpCredential>,
) -> Result<(), String> {
    let names = if credentials.is_empty() {
        "the agent's configuration defines none under `snmp.credentials`".to_owned()
    } else {
        let names: Vec<&str> = credentials.keys().map(String::as_str).collect();
        format!(
            "one of the agent's `snmp.credentials`: {}",
            names.join(", ")
        )
    };
    for (field, given) in [
        ("community", target.community.is_some()),
        ("v3", target.v3.is_some()),
    ] {
        if given {
            return Err(format!(
                "`{field}` is refused: targets in etcd carry no secrets nor references to them; name a `credential` instead ({names})"
            ));
        }
    }
    if target.credential.is_none() {
        return Err(format!("`credential` is required ({names})"));
    }
    Ok(())
}

/// `text` as YAML (JSON is YAML too); errors name the line, column and field.
fn parse<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_saphyr::from_str(text).map_err(|error| {
        let message = error.without_snippet().to_string();
        match error.location() {
            Some(location) => {
                let suffix = format!(" at line {}, column {}", location.line(), location.column());
                let message = message.strip_suffix(&suffix).unwrap_or(&message);
                format!(
                    "line {}, column {}: {message}",
                    location.line(),
                    location.column()
                )
            }
            None => message,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Community, SnmpVersion};
    use vigil_runtime::SecretRef;

    fn snapshot(entries: &[(&str, &str)]) -> Snapshot {
        entries
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    /// Entries under `/v/snmp/` of an agent with the credentials `c` (v2c) and
    /// `lan` (v2c, 10.0.0.0/8 only).
    fn entries() -> EtcdEntries {
        let community = SnmpCredential {
            version: SnmpVersion::V2c,
            community: Some(Community::Secret(SecretRef {
                file: Some("/etc/vigil/snmp-community".into()),
                env: None,
            })),
            v3: None,
            allowed_networks: None,
        };
        let lan = SnmpCredential {
            allowed_networks: Some(vec!["10.0.0.0/8".parse().unwrap()]),
            ..community.clone()
        };
        let credentials = BTreeMap::from([("c".to_owned(), community), ("lan".to_owned(), lan)]);
        EtcdEntries::new("/v/snmp/".into(), credentials, BTreeMap::new())
    }

    fn names(entries: &EtcdEntries) -> Vec<String> {
        entries
            .targets()
            .iter()
            .map(|polled| polled.name().to_owned())
            .collect()
    }

    #[test]
    fn targets_are_named_by_their_key_and_may_use_etcd_metric_sets() {
        let mut entries = entries();
        let report = entries.update(&snapshot(&[
            (
                "targets/core1",
                "{address: '10.0.0.1', credential: c, metric_sets: [if, chassis]}",
            ),
            (
                "metric_sets/chassis",
                "scalars: [{name: chassis.temperature, oid: 1.3.6.1.4.1.9.1.0}]",
            ),
        ]));
        assert_eq!(report, UpdateReport::default());
        assert_eq!(names(&entries), ["core1"]);
    }

    #[test]
    fn an_invalid_entry_is_rejected_by_key_and_field_and_the_last_good_version_stays() {
        let mut entries = entries();
        let good = "{address: h, credential: c, interval: 10s, timeout: 1s}";
        entries.update(&snapshot(&[("targets/a", good), ("targets/b", good)]));
        let report = entries.update(&snapshot(&[
            (
                "targets/a",
                "{address: h, credential: c, interval: 500ms, timeout: 100ms}",
            ),
            ("targets/b", good),
            ("targets/c", "{address: h, comunity: c}"),
            (
                "targets/d",
                "{address: h, credential: c, metric_sets: [nope]}",
            ),
            ("stray", "x"),
        ]));
        assert_eq!(
            report.newly_rejected,
            [
                (
                    "/v/snmp/stray".to_owned(),
                    "etcd key `/v/snmp/stray`: is neither under `targets/` nor under `metric_sets/`".to_owned()
                ),
                (
                    "/v/snmp/targets/a".to_owned(),
                    "etcd key `/v/snmp/targets/a`: `interval` must be at least 1s; its previous version stays in force".to_owned()
                ),
                (
                    "/v/snmp/targets/c".to_owned(),
                    "etcd key `/v/snmp/targets/c`: line 1, column 14: unknown field `comunity`, expected one of name, address, credential, version, community, v3, interval, timeout, retries, metric_sets, max_repetitions, values_per_request, labels".to_owned()
                ),
                (
                    "/v/snmp/targets/d".to_owned(),
                    "etcd key `/v/snmp/targets/d`: `metric_sets[0]` `nope` is neither built in (system, if, host_resources, ucd) nor defined".to_owned()
                ),
            ]
        );
        assert_eq!(names(&entries), ["a", "b"]);
        assert_eq!(entries.rejected.len(), 4);

        // The same rejections are not reported twice; a fixed entry is reported.
        let report = entries.update(&snapshot(&[("targets/a", good), ("targets/b", good)]));
        assert!(report.newly_rejected.is_empty());
        assert_eq!(report.accepted_again.len(), 4);
        assert!(entries.rejected.is_empty());
    }

    #[test]
    fn a_removed_metric_set_takes_its_targets_along() {
        let mut entries = entries();
        let set = "tables: [{columns: [{name: x, oid: 1.3.6.1.4.1.1.1}]}]";
        let target = "{address: h, credential: c, metric_sets: [custom]}";
        entries.update(&snapshot(&[
            ("targets/t", target),
            ("metric_sets/custom", set),
        ]));
        assert_eq!(names(&entries), ["t"]);
        let report = entries.update(&snapshot(&[("targets/t", target)]));
        assert!(names(&entries).is_empty());
        assert_eq!(report.newly_rejected.len(), 1);
    }

    #[test]
    fn two_keys_cannot_name_the_same_target() {
        let mut entries = entries();
        let report = entries.update(&snapshot(&[
            ("targets/a", "{name: x, address: h, credential: c}"),
            ("targets/b", "{name: x, address: h, credential: c}"),
        ]));
        assert_eq!(
            report.newly_rejected[0].1,
            "etcd key `/v/snmp/targets/b`: `name` `x` is used by the target at `/v/snmp/targets/a`"
        );
        assert_eq!(names(&entries), ["x"]);
    }

    // Regression: an etcd target could say `community: {file: ...}` (or `{env:
    // ...}`, or `v3` keys) and any address, and the agent read that local secret
    // and sent it there in the clear.
    #[test]
    fn an_etcd_target_cannot_bring_its_own_community_or_v3_keys() {
        let mut entries = entries();
        let report = entries.update(&snapshot(&[
            (
                "targets/file",
                "{address: '192.0.2.66:161', community: {file: /nonexistent/vigil-secret}}",
            ),
            ("targets/env", "{address: h, community: {env: HOME}}"),
            ("targets/inline", "{address: h, community: public}"),
            (
                "targets/v3",
                "{address: h, version: v3, v3: {user: u, auth_protocol: sha, auth_password: {file: /etc/vigil/v3.auth}}}",
            ),
            (
                "targets/both",
                "{address: h, credential: c, community: {env: HOME}}",
            ),
            ("targets/none", "{address: h}"),
            ("targets/good", "{address: h, credential: c}"),
        ]));
        let refused = |field: &str| {
            format!(
                "`{field}` is refused: targets in etcd carry no secrets nor references to them; name a `credential` instead (one of the agent's `snmp.credentials`: c, lan)"
            )
        };
        let expected: Vec<(String, String)> = [
            ("both", refused("community")),
            ("env", refused("community")),
            ("file", refused("community")),
            ("inline", refused("community")),
            (
                "none",
                "`credential` is required (one of the agent's `snmp.credentials`: c, lan)"
                    .to_owned(),
            ),
            ("v3", refused("v3")),
        ]
        .into_iter()
        .map(|(key, problem)| {
            let key = format!("/v/snmp/targets/{key}");
            let message = format!("etcd key `{key}`: {problem}");
            (key, message)
        })
        .collect();
        assert_eq!(report.newly_rejected, expected);
        assert_eq!(names(&entries), ["good"]);
        assert!(matches!(
            &entries.targets["targets/good"].1,
            TargetCredential::Named { name, .. } if name == "c"
        ));

        // A target that was good keeps its last good version, credential and all.
        let report = entries.update(&snapshot(&[(
            "targets/good",
            "{address: '192.0.2.66', community: {file: /etc/vigil/snmp-community}}",
        )]));
        assert_eq!(
            report.newly_rejected[0].1,
            format!(
                "etcd key `/v/snmp/targets/good`: {}; its previous version stays in force",
                refused("community")
            )
        );
        assert_eq!(entries.targets["targets/good"].0.address, "h");
        assert_eq!(entries.targets["targets/good"].0.community, None);
    }

    #[test]
    fn an_etcd_target_names_a_defined_credential_within_its_networks() {
        let mut entries = entries();
        let report = entries.update(&snapshot(&[
            (
                "targets/inside",
                "{address: '10.1.2.3:161', credential: lan}",
            ),
            ("targets/outside", "{address: '192.0.2.7', credential: lan}"),
            ("targets/unknown", "{address: h, credential: core}"),
            (
                "targets/version",
                "{address: h, credential: c, version: v1}",
            ),
            ("targets/same", "{address: h, credential: c, version: v2c}"),
        ]));
        assert_eq!(
            report
                .newly_rejected
                .iter()
                .map(|(_, message)| message.as_str())
                .collect::<Vec<_>>(),
            [
                "etcd key `/v/snmp/targets/outside`: `address` `192.0.2.7` is outside the `allowed_networks` of credential `lan` (10.0.0.0/8)",
                "etcd key `/v/snmp/targets/unknown`: `credential` `core` is not one of the agent's `snmp.credentials` (c, lan)",
                "etcd key `/v/snmp/targets/version`: `version` is v1, but credential `c` is v2c; leave `version` out, the credential sets it",
            ]
        );
        assert_eq!(names(&entries), ["inside", "same"]);
    }
}
