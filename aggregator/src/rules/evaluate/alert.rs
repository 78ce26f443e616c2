//! The alert state machine of one rule and one series (or log group key):
//! inactive -> pending -> firing -> resolved, driven by evaluations in event time,
//! and the `AlertEvent`s it emits for the alerts topic and the pagers.

use crate::rules::model::Rule;
use vigil_proto::labels::{ContentId, label};
use vigil_proto::v1::{AlertEvent, AlertStatus, Label};
use vigil_runtime::duration::nanos;

/// Labels of a series or log group key, sorted by name: the identity of one alert
/// of a rule.
pub(crate) type BaseLabels = Vec<(String, String)>;

/// A rule together with the name of its group, as events need both.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RuleRef<'a> {
    pub(crate) group: &'a str,
    pub(crate) rule: &'a Rule,
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
}

/// One evaluation of one alert at event time `at`: `holds` says whether the
/// condition is true, `value` is what was compared (`None` when the series has no
/// data). Emits the events of any state change.
pub(crate) fn step(
    slot: &mut Option<ActiveAlert>,
    rule: RuleRef<'_>,
    base: &BaseLabels,
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
            };
            if hold_for == 0 {
                alert.fired_at = Some(at);
                out.push(rule.event(&alert, AlertStatus::Firing, at));
            } else {
                out.push(rule.event(&alert, AlertStatus::Pending, at));
            }
            *slot = Some(alert);
        }
        None => {}
        Some(alert) => {
            if let Some(value) = value {
                alert.value = value;
            }
            if holds {
                alert.cleared_at = None;
                if !alert.is_firing() && at - alert.active_at >= hold_for {
                    alert.fired_at = Some(at);
                    out.push(rule.event(alert, AlertStatus::Firing, at));
                }
            } else if !alert.is_firing() {
                // A pending alert whose condition clears goes back to inactive.
                *slot = None;
            } else {
                let cleared_at = *alert.cleared_at.get_or_insert(at);
                if at - cleared_at >= nanos(rule.rule.keep_firing_for) {
                    out.push(rule.event(alert, AlertStatus::Resolved, at));
                    *slot = None;
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
}
