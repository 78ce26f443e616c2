//! Alerts read back from the state topic, waiting for their series to show up
//! here: after a restart, or after the series' partition moved to this consumer.
//! Metric series and log keys resume alike; a log key's window starts empty.
//! A resumed alert keeps its `for` timer and its firing time, so it neither
//! starts over nor pages again; one whose series never returns is ended once the
//! series would have gone stale.

use super::alert::{ActiveAlert, BaseLabels, RuleRef, Source, StateJournal, fingerprint};
use crate::model::RuleSet;
use std::collections::HashMap;
use std::time::Duration;
use vigil_config::duration::nanos;
use vigil_proto::v1::{AlertEvent, AlertState, AlertStatus};

/// Restored alerts not yet resumed, by fingerprint.
#[derive(Debug, Default)]
pub(crate) struct Dormant {
    by_fingerprint: HashMap<String, AlertState>,
    /// How many dormant alerts each (group, alert) has: new series of rules
    /// without any skip the fingerprint.
    per_rule: HashMap<(String, String), usize>,
    /// Resumed since the stage last took them.
    resumed: Vec<(AlertEvent, AlertState)>,
}

impl Dormant {
    /// Remembers `state`, unless a later state of the same alert is known (the
    /// topic can hand back an older record of an alert this consumer released).
    pub(crate) fn insert(&mut self, state: AlertState) {
        let newer = |s: &AlertState| (s.evaluated_at_unix_nano, s.notified_at_unix_nano);
        if self
            .by_fingerprint
            .get(&state.fingerprint)
            .is_some_and(|known| newer(known) > newer(&state))
        {
            return;
        }
        let rule = (state.group.clone(), state.alert.clone());
        if let Some(previous) = self.by_fingerprint.insert(state.fingerprint.clone(), state) {
            self.uncount(&(previous.group, previous.alert));
        }
        *self.per_rule.entry(rule).or_default() += 1;
    }

    pub(crate) fn remove(&mut self, fingerprint: &str) -> Option<AlertState> {
        let state = self.by_fingerprint.remove(fingerprint)?;
        self.uncount(&(state.group.clone(), state.alert.clone()));
        Some(state)
    }

    fn uncount(&mut self, rule: &(String, String)) {
        if let Some(count) = self.per_rule.get_mut(rule) {
            *count -= 1;
            if *count == 0 {
                self.per_rule.remove(rule);
            }
        }
    }

    /// The restored alert of `rule` for the new series (or log key) `base`, which
    /// arrives from `source`, if there is one.
    pub(crate) fn resume(
        &mut self,
        rule: RuleRef<'_>,
        base: &BaseLabels,
        source: &Source,
    ) -> Option<ActiveAlert> {
        if self.per_rule.is_empty()
            || !self
                .per_rule
                .contains_key(&(rule.group.to_owned(), rule.rule.alert.clone()))
        {
            return None;
        }
        let labels = rule.labels(base);
        let state = self.remove(&fingerprint(&rule.rule.alert, &labels))?;
        let alert = ActiveAlert::restored(&state, source.clone());
        let status = alert.status();
        let at = state.evaluated_at_unix_nano;
        rule.record(&alert, status, at);
        self.resumed.push((rule.event(&alert, status, at), state));
        Some(alert)
    }

    pub(crate) fn take_resumed(&mut self) -> Vec<(AlertEvent, AlertState)> {
        std::mem::take(&mut self.resumed)
    }

    /// Ends the alerts of partitions `owned` accepts whose series stayed away
    /// past the time it would have gone stale at `now`.
    pub(crate) fn end_unresumed(
        &mut self,
        rules: &RuleSet,
        journal: &StateJournal,
        owned: &dyn Fn(&Source) -> bool,
        now: i64,
    ) -> Vec<AlertEvent> {
        let mut ended: Vec<AlertState> = Vec::new();
        self.by_fingerprint.retain(|_, state| {
            let source = Source::new(&state.source_topic, state.source_partition);
            let overdue =
                now.saturating_sub(state.evaluated_at_unix_nano) > nanos(gone_after(rules, state));
            if owned(&source) && overdue {
                ended.push(state.clone());
                return false;
            }
            true
        });
        let mut events = Vec::new();
        for state in ended {
            self.uncount(&(state.group.clone(), state.alert.clone()));
            let alert = ActiveAlert::restored(&state, Source::default());
            match rules.find(&state.group, &state.alert) {
                Some((group, rule)) => {
                    let rule = RuleRef {
                        group: &group.name,
                        rule,
                        journal,
                    };
                    if alert.is_firing() {
                        events.push(rule.event(&alert, AlertStatus::Resolved, now));
                    }
                    rule.record(&alert, AlertStatus::Resolved, now);
                }
                None => {
                    // The rule is gone too: end the alert with what its record says.
                    if alert.is_firing() {
                        events.push(AlertEvent {
                            group: state.group.clone(),
                            alert: state.alert.clone(),
                            labels: state.labels.clone(),
                            status: AlertStatus::Resolved as i32,
                            starts_at_unix_nano: state.fired_at_unix_nano,
                            ends_at_unix_nano: now,
                            value: state.value,
                            fingerprint: state.fingerprint.clone(),
                            evaluated_at_unix_nano: now,
                            ..AlertEvent::default()
                        });
                    }
                    journal.push(AlertState {
                        status: AlertStatus::Resolved as i32,
                        evaluated_at_unix_nano: now,
                        ..state
                    });
                }
            }
        }
        events
    }
}

/// How long after its last evaluation the series of `state` counts as gone: as
/// long as makes a series stale, then `keep_firing_for`.
fn gone_after(rules: &RuleSet, state: &AlertState) -> Duration {
    match rules.find(&state.group, &state.alert) {
        Some((group, rule)) => super::STALE_AFTER.max(group.interval * 2) + rule.keep_firing_for,
        None => super::STALE_AFTER,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Evaluator, Source};
    use crate::rule_set_for_test;
    use std::collections::HashMap;
    use vigil_proto::labels::find;
    use vigil_proto::v1::{
        AlertEvent, AlertState, AlertStatus, MetricBatch, Resource, Sample, sample,
    };

    const S: i64 = 1_000_000_000;

    const RULES: &str = r#"
groups:
  - name: queues
    interval: 1s
    rules:
      - alert: QueueBacklog
        metric: queue.depth
        condition: value > 5
        for: 10s
"#;

    fn depth(host: &str, seconds: i64, value: f64) -> MetricBatch {
        MetricBatch {
            resource: Some(Resource {
                id: host.into(),
                host_name: host.into(),
                ..Resource::default()
            }),
            samples: vec![Sample {
                name: "queue.depth".into(),
                time_unix_nano: seconds * S,
                value: Some(sample::Value::Gauge(value)),
                ..Sample::default()
            }],
            producer: "test".into(),
        }
    }

    /// Feeds `value` for `host` from `from` to `to` seconds from `source`; returns
    /// (status, evaluated at in seconds) of the events.
    fn feed(
        evaluator: &mut Evaluator,
        host: &str,
        source: &Source,
        seconds: std::ops::RangeInclusive<i64>,
        value: f64,
    ) -> Vec<(AlertStatus, i64)> {
        let mut events: Vec<AlertEvent> = Vec::new();
        for second in seconds {
            events.extend(evaluator.observe_metrics_from(&depth(host, second, value), source));
        }
        events
            .iter()
            .map(|e| (e.status(), e.evaluated_at_unix_nano / S))
            .collect()
    }

    /// What the state topic holds after `changes`: the latest state per alert,
    /// without those that ended.
    fn compacted(changes: Vec<AlertState>) -> Vec<AlertState> {
        let mut latest: HashMap<String, AlertState> = HashMap::new();
        for state in changes {
            if state.status == AlertStatus::Resolved as i32 {
                latest.remove(&state.fingerprint);
            } else {
                latest.insert(state.fingerprint.clone(), state);
            }
        }
        latest.into_values().collect()
    }

    fn restarted(records: Vec<AlertState>) -> Evaluator {
        let mut evaluator = Evaluator::new(rule_set_for_test(RULES));
        for record in records {
            evaluator.restore(record);
        }
        evaluator
    }

    #[test]
    fn state_changes_are_journaled_pending_firing_then_ended() {
        let mut evaluator = Evaluator::new(rule_set_for_test(RULES));
        let p0 = Source::new("metrics", 0);
        feed(&mut evaluator, "h1", &p0, 0..=12, 10.0);
        feed(&mut evaluator, "h1", &p0, 13..=13, 1.0);
        let changes = evaluator.take_state_changes();
        let journal: Vec<(AlertStatus, i64, i64, &str, i32)> = changes
            .iter()
            .map(|s| {
                (
                    s.status(),
                    s.active_at_unix_nano / S,
                    s.fired_at_unix_nano / S,
                    s.source_topic.as_str(),
                    s.source_partition,
                )
            })
            .collect();
        assert_eq!(
            journal,
            vec![
                (AlertStatus::Pending, 0, 0, "metrics", 0),
                (AlertStatus::Firing, 0, 10, "metrics", 0),
                (AlertStatus::Resolved, 0, 10, "metrics", 0),
            ]
        );
        assert_eq!(find(&changes[0].labels, "alertname"), Some("QueueBacklog"));
        assert!(evaluator.take_state_changes().is_empty());
    }

    /// A firing alert of `rules`, restored after a restart, resumes when its
    /// series shows up again without firing a second time, and resolves once.
    fn firing_alert_resumes_once(rules: &str) {
        let p0 = Source::new("metrics", 0);
        let mut before = Evaluator::new(rule_set_for_test(rules));
        let events = feed(&mut before, "h1", &p0, 0..=15, 10.0);
        assert_eq!(
            events,
            vec![(AlertStatus::Pending, 0), (AlertStatus::Firing, 10)]
        );

        let mut after = Evaluator::new(rule_set_for_test(rules));
        for record in compacted(before.take_state_changes()) {
            after.restore(record);
        }
        assert!(feed(&mut after, "h1", &p0, 16..=20, 10.0).is_empty());
        assert_eq!(after.alerts().len(), 1);
        let resumed = after.take_resumed();
        assert_eq!(resumed.len(), 1);
        assert_eq!(resumed[0].0.status(), AlertStatus::Firing);
        assert_eq!(resumed[0].0.starts_at_unix_nano, 10 * S);
        assert_eq!(
            feed(&mut after, "h1", &p0, 21..=23, 1.0),
            vec![(AlertStatus::Resolved, 21)]
        );
    }

    #[test]
    fn a_restored_firing_alert_resumes_without_firing_again_and_resolves_once() {
        firing_alert_resumes_once(RULES);
    }

    #[test]
    fn a_restored_aggregated_alert_resumes_without_firing_again() {
        firing_alert_resumes_once(&RULES.replace(
            "for: 10s",
            "for: 10s\n        by: [host]\n        aggregate: max",
        ));
    }

    #[test]
    fn a_restored_pending_alert_fires_at_its_original_due_time() {
        let p0 = Source::new("metrics", 0);
        let mut before = Evaluator::new(rule_set_for_test(RULES));
        feed(&mut before, "h1", &p0, 0..=5, 10.0);
        let mut after = restarted(compacted(before.take_state_changes()));
        assert_eq!(
            feed(&mut after, "h1", &p0, 6..=12, 10.0),
            vec![(AlertStatus::Firing, 10)]
        );
        // Without the restored state the timer would have started over.
        let mut fresh = restarted(Vec::new());
        assert_eq!(
            feed(&mut fresh, "h1", &p0, 6..=12, 10.0),
            vec![(AlertStatus::Pending, 6)]
        );
    }

    #[test]
    fn a_restored_alert_whose_series_never_returns_ends_only_on_its_owner() {
        let p0 = Source::new("metrics", 0);
        let p1 = Source::new("metrics", 1);
        let mut before = Evaluator::new(rule_set_for_test(RULES));
        feed(&mut before, "h1", &p1, 0..=12, 10.0);
        let mut after = restarted(compacted(before.take_state_changes()));
        // Another host keeps the clock moving past the point h1 went stale.
        feed(&mut after, "h2", &p0, 13..=400, 1.0);
        let only_p0 = |source: &Source| *source == p0;
        assert!(after.end_unresumed(&only_p0).is_empty());
        let owns_p1 = |source: &Source| *source == p1;
        let ended = after.end_unresumed(&owns_p1);
        assert_eq!(
            ended
                .iter()
                .map(|e| (e.status(), find(&e.labels, "host")))
                .collect::<Vec<_>>(),
            vec![(AlertStatus::Resolved, Some("h1"))]
        );
        assert!(after.end_unresumed(&owns_p1).is_empty());
        assert_eq!(
            after.take_state_changes().last().map(AlertState::status),
            Some(AlertStatus::Resolved)
        );
    }

    #[test]
    fn released_series_are_forgotten_without_events_and_resume_when_they_return() {
        let p0 = Source::new("metrics", 0);
        let p1 = Source::new("metrics", 1);
        let mut evaluator = Evaluator::new(rule_set_for_test(RULES));
        for second in 0..=12 {
            feed(&mut evaluator, "h0", &p0, second..=second, 10.0);
            feed(&mut evaluator, "h1", &p1, second..=second, 10.0);
        }
        let records = compacted(evaluator.take_state_changes());
        assert_eq!(records.len(), 2);
        evaluator.release(&|source: &Source| *source == p0);
        let firing: Vec<_> = evaluator
            .alerts()
            .iter()
            .map(|e| find(&e.labels, "host").unwrap_or_default().to_owned())
            .collect();
        assert_eq!(firing, vec!["h0"]);
        assert!(evaluator.take_state_changes().is_empty());
        // The partition comes back: its alert resumes from its record.
        for record in records.into_iter().filter(|r| r.source_partition == 1) {
            evaluator.restore(record);
        }
        assert!(feed(&mut evaluator, "h1", &p1, 13..=14, 10.0).is_empty());
        assert_eq!(evaluator.alerts().len(), 2);
    }

    #[test]
    fn an_older_record_does_not_replace_a_newer_one() {
        let p0 = Source::new("metrics", 0);
        let mut before = Evaluator::new(rule_set_for_test(RULES));
        feed(&mut before, "h1", &p0, 0..=12, 10.0);
        let changes = before.take_state_changes();
        let (pending, firing) = (changes[0].clone(), changes[1].clone());
        let mut after = restarted(vec![firing, pending]);
        assert!(feed(&mut after, "h1", &p0, 13..=14, 10.0).is_empty());
    }
}
