//! The alert state machine of one rule and one series (or log group key):
//! inactive -> pending -> firing -> resolved, driven by evaluations in event time,
//! and the `AlertEvent`s it emits for the alerts topic and the pagers.

use crate::model::Rule;
use std::sync::{Arc, Mutex};
use vigil_config::duration::nanos;
use vigil_proto::labels::{ContentId, label};
use vigil_proto::v1::{AlertEvent, AlertState, AlertStatus, Label};

/// Labels of a series or log group key, sorted by name: the identity of one alert
/// of a rule.
pub(crate) type BaseLabels = Vec<(String, String)>;

/// Where the data of a series arrives: an input topic and partition. The consumer
/// that owns the partition evaluates the series, so the series' alerts belong to
/// it; after a restart or a rebalance, whoever owns the partition resumes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Source {
    pub topic: Arc<str>,
    pub partition: i32,
}

impl Source {
    pub fn new(topic: &str, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

/// The alert states that changed since the stage last took them: what it writes
/// to the state topic. A `RESOLVED` state deletes the alert's record.
#[derive(Debug, Default)]
pub(crate) struct StateJournal(Mutex<Vec<AlertState>>);

impl StateJournal {
    pub(crate) fn push(&self, state: AlertState) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(state);
    }

    pub(crate) fn take(&self) -> Vec<AlertState> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A rule together with the name of its group, as events need both, and the
/// journal its state changes go to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RuleRef<'a> {
    pub(crate) group: &'a str,
    pub(crate) rule: &'a Rule,
    pub(crate) journal: &'a StateJournal,
}

impl RuleRef<'_> {
    /// Alert labels: the series labels, then the rule's labels (which win), then
    /// `alertname`; sorted by name.
    pub(crate) fn labels(&self, base: &BaseLabels) -> Vec<Label> {
        let mut labels: std::collections::BTreeMap<&str, &str> = base
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        for (name, value) in &self.rule.labels {
            labels.insert(name, value);
        }
        labels.insert("alertname", &self.rule.alert);
        labels
            .into_iter()
            .map(|(name, value)| label(name, value))
            .collect()
    }

    /// The event for `alert` entering `status` at event time `at`.
    pub(crate) fn event(&self, alert: &ActiveAlert, status: AlertStatus, at: i64) -> AlertEvent {
        let annotations = self
            .rule
            .annotations
            .iter()
            .map(|(name, template)| label(name, template.render(&alert.labels, alert.value)))
            .collect();
        AlertEvent {
            group: self.group.to_owned(),
            alert: self.rule.alert.clone(),
            labels: alert.labels.clone(),
            annotations,
            status: status as i32,
            starts_at_unix_nano: alert.fired_at.unwrap_or(alert.active_at),
            ends_at_unix_nano: if status == AlertStatus::Resolved {
                at
            } else {
                0
            },
            value: alert.value,
            fingerprint: alert.fingerprint.clone(),
            evaluated_at_unix_nano: at,
        }
    }

    /// Writes the state of `alert` at `at` to the journal; `Resolved` for an
    /// alert that ended (fired or not).
    pub(crate) fn record(&self, alert: &ActiveAlert, status: AlertStatus, at: i64) {
        self.journal.push(AlertState {
            group: self.group.to_owned(),
            alert: self.rule.alert.clone(),
            labels: alert.labels.clone(),
            fingerprint: alert.fingerprint.clone(),
            status: status as i32,
            active_at_unix_nano: alert.active_at,
            fired_at_unix_nano: alert.fired_at.unwrap_or(0),
            cleared_at_unix_nano: alert.cleared_at.unwrap_or(0),
            value: alert.value,
            evaluated_at_unix_nano: at,
            source_topic: alert.source.topic.to_string(),
            source_partition: alert.source.partition,
            notified_at_unix_nano: 0,
        });
    }
}

/// Stable identity of an alert: a hash of its name and labels, the pager's dedup
/// key. Depends on content only, so it survives restarts and reloads.
pub(crate) fn fingerprint(alert: &str, labels: &[Label]) -> String {
    ContentId::new().part(alert).labels(labels).finish()
}

/// A pending or firing alert.
#[derive(Debug, Clone)]
pub(crate) struct ActiveAlert {
    pub(crate) labels: Vec<Label>,
    pub(crate) fingerprint: String,
    /// When the condition started to hold (the pending timer's start).
    pub(crate) active_at: i64,
    /// When the alert fired; `None` while pending.
    pub(crate) fired_at: Option<i64>,
    /// When the condition stopped holding while firing (for `keep_firing_for`).
    pub(crate) cleared_at: Option<i64>,
    /// The last value compared.
    pub(crate) value: f64,
    /// Where the data of its series arrives.
    pub(crate) source: Source,
}

impl ActiveAlert {
    pub(crate) fn is_firing(&self) -> bool {
        self.fired_at.is_some()
    }

    pub(crate) fn status(&self) -> AlertStatus {
        if self.is_firing() {
            AlertStatus::Firing
        } else {
            AlertStatus::Pending
        }
    }

    /// Gives the alert new labels (after a rule reload).
    pub(crate) fn relabel(&mut self, rule: &Rule, labels: Vec<Label>) {
        self.fingerprint = fingerprint(&rule.alert, &labels);
        self.labels = labels;
    }

    /// The alert a state record describes, for the series `source` now feeds.
    pub(crate) fn restored(state: &AlertState, source: Source) -> Self {
        let time = |nanos: i64| (nanos != 0).then_some(nanos);
        ActiveAlert {
            labels: state.labels.clone(),
            fingerprint: state.fingerprint.clone(),
            active_at: state.active_at_unix_nano,
            fired_at: time(state.fired_at_unix_nano),
            cleared_at: time(state.cleared_at_unix_nano),
            value: state.value,
            source,
        }
    }
}

/// One evaluation of one alert at event time `at`: `holds` says whether the
/// condition is true, `value` is what was compared (`None` when the series has no
/// data). Emits the events of any state change.
#[allow(clippy::too_many_arguments)]
pub(crate) fn step(
    slot: &mut Option<ActiveAlert>,
    rule: RuleRef<'_>,
    base: &BaseLabels,
    source: &Source,
    at: i64,
    value: Option<f64>,
    holds: bool,
    out: &mut Vec<AlertEvent>,
) {
    let hold_for = nanos(rule.rule.for_duration);
    match slot {
        None if holds => {
            let labels = rule.labels(base);
            let mut alert = ActiveAlert {
                fingerprint: fingerprint(&rule.rule.alert, &labels),
                labels,
                active_at: at,
                fired_at: None,
                cleared_at: None,
                value: value.unwrap_or(f64::NAN),
                source: source.clone(),
            };
            let status = if hold_for == 0 {
                alert.fired_at = Some(at);
                AlertStatus::Firing
            } else {
                AlertStatus::Pending
            };
            out.push(rule.event(&alert, status, at));
            rule.record(&alert, status, at);
            *slot = Some(alert);
        }
        None => {}
        Some(alert) => {
            if let Some(value) = value {
                alert.value = value;
            }
            if alert.source != *source {
                alert.source = source.clone();
            }
            if holds {
                if alert.cleared_at.take().is_some() {
                    rule.record(alert, AlertStatus::Firing, at);
                }
                if !alert.is_firing() && at - alert.active_at >= hold_for {
                    alert.fired_at = Some(at);
                    out.push(rule.event(alert, AlertStatus::Firing, at));
                    rule.record(alert, AlertStatus::Firing, at);
                }
            } else if !alert.is_firing() {
                // A pending alert whose condition clears goes back to inactive.
                rule.record(alert, AlertStatus::Resolved, at);
                *slot = None;
            } else {
                let newly_cleared = alert.cleared_at.is_none();
                let cleared_at = *alert.cleared_at.get_or_insert(at);
                if at - cleared_at >= nanos(rule.rule.keep_firing_for) {
                    out.push(rule.event(alert, AlertStatus::Resolved, at));
                    rule.record(alert, AlertStatus::Resolved, at);
                    *slot = None;
                } else if newly_cleared {
                    rule.record(alert, AlertStatus::Firing, at);
                }
            }
        }
    }
}

/// Resolves `alert` at `at` if it is firing (its rule or series went away);
/// pending alerts end silently.
pub(crate) fn resolve(alert: &ActiveAlert, rule: RuleRef<'_>, at: i64, out: &mut Vec<AlertEvent>) {
    if alert.is_firing() {
        out.push(rule.event(alert, AlertStatus::Resolved, at));
    }
    rule.record(alert, AlertStatus::Resolved, at);
}
