//! Per-key state of one log rule: the event times of matching lines in the sliding
//! window of every `group_by` key, the count compared with the threshold, and each
//! key's alert.
//!
//! A key is evaluated when its lines arrive (at the line's event time, or at the
//! evaluator's clock for lines that arrive late), so a burst fires even between
//! ticks, and at every group tick, so counts slide out of the window and alerts
//! resolve while no lines come.

use super::alert::{ActiveAlert, BaseLabels, RuleRef, resolve, step};
use super::metric::relabel;
use crate::rules::model::LogRule;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use vigil_proto::v1::AlertEvent;
use vigil_runtime::duration::nanos;

#[derive(Debug, Default)]
pub(crate) struct KeyState {
    /// Event times of matching lines, sorted.
    times: VecDeque<i64>,
    alert: Option<ActiveAlert>,
}

/// The keys of one log rule, by their `group_by` labels.
#[derive(Debug, Default)]
pub(crate) struct LogState {
    keys: BTreeMap<BaseLabels, KeyState>,
    /// Keys with new lines, by the instant they are to be evaluated at.
    arrivals: BTreeMap<i64, BTreeSet<BaseLabels>>,
}

impl LogState {
    /// Counts a matching line of `key` at event time `time`, to be evaluated at
    /// `instant` (`time`, or later for a late line).
    pub(crate) fn observe(&mut self, key: BaseLabels, time: i64, instant: i64) {
        let state = self.keys.entry(key.clone()).or_default();
        let position = state.times.partition_point(|t| *t <= time);
        state.times.insert(position, time);
        self.arrivals.entry(instant).or_default().insert(key);
    }

    /// Instants at which keys with new lines wait to be evaluated.
    pub(crate) fn arrival_instants(&self) -> impl Iterator<Item = i64> + '_ {
        self.arrivals.keys().copied()
    }

    /// Evaluates at `at`: every key on a tick, otherwise the keys whose lines
    /// arrived for this instant.
    pub(crate) fn evaluate(
        &mut self,
        rule: RuleRef<'_>,
        log: &LogRule,
        at: i64,
        tick: bool,
        out: &mut Vec<AlertEvent>,
    ) {
        let arrived = self.arrivals.remove(&at).unwrap_or_default();
        let window = nanos(log.window());
        let threshold = log.threshold();
        let horizon = at.saturating_sub(window);
        self.keys.retain(|key, state| {
            if !tick && !arrived.contains(key) {
                return true;
            }
            let start = state.times.partition_point(|t| *t <= horizon);
            let end = state.times.partition_point(|t| *t <= at);
            let count = (end - start) as u64;
            step(
                &mut state.alert,
                rule,
                key,
                at,
                Some(count as f64),
                count >= threshold,
                out,
            );
            // Instants only move forward, so lines out of this window are done.
            state.times.drain(..start);
            state.alert.is_some() || !state.times.is_empty()
        });
    }

    /// Carries the state over to a changed rule with the same `group_by`.
    pub(crate) fn adopt(
        &mut self,
        old: RuleRef<'_>,
        new: RuleRef<'_>,
        at: i64,
        out: &mut Vec<AlertEvent>,
    ) {
        for (key, state) in &mut self.keys {
            relabel(&mut state.alert, old, new, key, at, out);
        }
    }

    pub(crate) fn resolve_all(&self, rule: RuleRef<'_>, at: i64, out: &mut Vec<AlertEvent>) {
        for alert in self.alerts() {
            resolve(alert, rule, at, out);
        }
    }

    pub(crate) fn alerts(&self) -> impl Iterator<Item = &ActiveAlert> {
        self.keys.values().filter_map(|k| k.alert.as_ref())
    }
}
