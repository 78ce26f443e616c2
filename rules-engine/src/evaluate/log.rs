//! Per-key state of one log rule: the event times of matching lines in the sliding
//! windows of every `group_by` key (or the values of a field, for `new_value` and
//! `cardinality`), the condition of the rule's type computed over them, and each
//! key's alert.
//!
//! A key is evaluated when its lines arrive (at the line's event time, or at the
//! evaluator's clock for lines that arrive late), so a burst fires even between
//! ticks, and at every group tick, so counts slide out of the window, silent keys
//! are noticed and alerts resolve while no lines come. A late line is kept at its
//! own event time, so it counts in every window that contains that time.

use super::alert::{ActiveAlert, BaseLabels, RuleRef, Source, resolve, step};
use super::metric::relabel;
use crate::log_filter::LogRecord;
use crate::model::{LogRule, LogTrigger, MAX_REMEMBERED_VALUES};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::mem::discriminant;
use vigil_config::duration::nanos;
use vigil_proto::v1::AlertEvent;

#[derive(Debug, Default)]
pub(crate) struct KeyState {
    /// Event times of matching lines, sorted; for `new_value`, the times a new
    /// value was seen.
    times: VecDeque<i64>,
    /// Event time of the key's first line (`flatline` watches it from then on).
    first_seen: i64,
    alert: Option<ActiveAlert>,
    /// Where the key's latest line arrived.
    source: Source,
}

impl KeyState {
    fn insert(&mut self, time: i64) {
        let position = self.times.partition_point(|t| *t <= time);
        self.times.insert(position, time);
    }

    /// Lines in `(from, to]`.
    fn count(&self, from: i64, to: i64) -> u64 {
        let start = self.times.partition_point(|t| *t <= from);
        let end = self.times.partition_point(|t| *t <= to);
        end.saturating_sub(start) as u64
    }

    /// Forgets lines at or before `horizon`: instants only move forward, so no
    /// later window holds them.
    fn forget_until(&mut self, horizon: i64) {
        let start = self.times.partition_point(|t| *t <= horizon);
        self.times.drain(..start);
    }
}

/// The values of the rule's field seen for one group key (`new_value`,
/// `cardinality`), each with the event time it was last seen.
#[derive(Debug, Default)]
struct ValueMemory {
    /// Lines not taken in yet, as (event time, value): taken in time order once
    /// evaluation reaches their time, so a value is judged against what came
    /// before it in event time.
    pending: Vec<(i64, String)>,
    last_seen: HashMap<String, i64>,
    /// The same as `last_seen`, ordered by time, to forget the oldest first.
    by_time: BTreeSet<(i64, String)>,
    /// Where the key's latest line arrived.
    source: Source,
}

impl ValueMemory {
    /// The pending lines with an event time at or before `at`, in time order.
    fn take_pending(&mut self, at: i64) -> Vec<(i64, String)> {
        let (mut due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(time, _)| *time <= at);
        self.pending = rest;
        due.sort();
        due
    }

    /// Records `value` seen at `time`, keeping at most `capacity` values (the
    /// least recently seen goes first). Returns when it was last seen before.
    fn remember(&mut self, value: String, time: i64, capacity: usize) -> Option<i64> {
        let previous = self.last_seen.get(&value).copied();
        match previous {
            Some(before) if before >= time => return previous,
            Some(before) => {
                self.by_time.remove(&(before, value.clone()));
            }
            None if self.last_seen.len() >= capacity => {
                match self.by_time.first() {
                    Some((oldest, _)) if *oldest < time => self.forget_oldest(),
                    // Older than everything remembered: it would be forgotten first.
                    _ => return None,
                }
            }
            None => {}
        }
        self.last_seen.insert(value.clone(), time);
        self.by_time.insert((time, value));
        previous
    }

    fn forget_oldest(&mut self) {
        if let Some((_, value)) = self.by_time.pop_first() {
            self.last_seen.remove(&value);
        }
    }

    /// Forgets values last seen at or before `horizon`.
    fn forget_until(&mut self, horizon: i64) {
        while self
            .by_time
            .first()
            .is_some_and(|(time, _)| *time <= horizon)
        {
            self.forget_oldest();
        }
    }

    fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.last_seen.is_empty()
    }
}

/// Which keys an evaluation at `at` looks at: all of them on a tick, otherwise
/// those whose lines arrived for this instant.
#[derive(Debug)]
struct Due {
    at: i64,
    tick: bool,
    arrived: BTreeSet<BaseLabels>,
}

impl Due {
    fn includes(&self, labels: &BaseLabels) -> bool {
        self.tick || self.arrived.contains(labels)
    }
}

/// The keys of one log rule, by their `group_by` labels.
#[derive(Debug, Default)]
pub(crate) struct LogState {
    /// Alerts and line times, by alert labels: the `group_by` labels, plus the
    /// value's label for `new_value`.
    keys: BTreeMap<BaseLabels, KeyState>,
    /// Values of the rule's field by `group_by` labels (`new_value`,
    /// `cardinality`).
    values: BTreeMap<BaseLabels, ValueMemory>,
    /// `group_by` keys with new lines, by the instant they are to be evaluated at.
    arrivals: BTreeMap<i64, BTreeSet<BaseLabels>>,
    /// The first instant the rule was evaluated at: what it has watched since.
    started: Option<i64>,
}

impl LogState {
    /// Takes in a matching line of `key` at event time `time`, arrived from
    /// `source`, to be evaluated at `instant` (`time`, or later for a late line).
    /// For `new_value` and `cardinality`, a line without the field has no value
    /// and is not counted. Says whether the key is new and its alert is keyed by
    /// `key` (for `new_value` it is keyed by the value too, and only exists for a
    /// `window`).
    pub(crate) fn observe(
        &mut self,
        log: &LogRule,
        key: BaseLabels,
        record: &LogRecord<'_>,
        time: i64,
        instant: i64,
        source: &Source,
    ) -> bool {
        let new = match log.trigger.field() {
            Some(field) => {
                let value = record.get(field);
                if value.is_empty() {
                    return false;
                }
                let new = !self.values.contains_key(&key);
                let memory = self.values.entry(key.clone()).or_default();
                memory.pending.push((time, value.to_owned()));
                if memory.source != *source {
                    memory.source = source.clone();
                }
                new && matches!(log.trigger, LogTrigger::Cardinality { .. })
            }
            None => {
                let new = !self.keys.contains_key(&key);
                let state = self.keys.entry(key.clone()).or_insert_with(|| KeyState {
                    first_seen: time,
                    source: source.clone(),
                    ..KeyState::default()
                });
                state.insert(time);
                if state.source != *source {
                    state.source = source.clone();
                }
                new
            }
        };
        self.arrivals.entry(instant).or_default().insert(key);
        new
    }

    /// Gives the key `labels` an alert restored from the state topic.
    pub(crate) fn install(&mut self, labels: &BaseLabels, alert: ActiveAlert) {
        let state = self.keys.entry(labels.clone()).or_insert_with(|| KeyState {
            source: alert.source.clone(),
            ..KeyState::default()
        });
        state.alert = Some(alert);
    }

    /// Forgets the keys (and their alerts, without an event) whose lines no
    /// longer arrive here: their partition moved to another consumer.
    pub(crate) fn release(&mut self, owned: &dyn Fn(&Source) -> bool) {
        self.keys.retain(|_, key| owned(&key.source));
        self.values.retain(|_, memory| owned(&memory.source));
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
        let started = *self.started.get_or_insert(at);
        if !tick && !self.arrivals.contains_key(&at) {
            // An instant at which lines of other rules arrived.
            return;
        }
        let due = Due {
            at,
            tick,
            arrived: self.arrivals.remove(&at).unwrap_or_default(),
        };
        match &log.trigger {
            LogTrigger::Frequency { count, window } => {
                let window = nanos(*window);
                self.evaluate_counts(rule, &due, window, out, |key| {
                    let lines = key.count(at.saturating_sub(window), at);
                    (lines as f64, lines >= *count)
                });
            }
            LogTrigger::Any { window } => {
                let window = nanos(*window);
                self.evaluate_counts(rule, &due, window, out, |key| {
                    let lines = key.count(at.saturating_sub(window), at);
                    (lines as f64, lines >= 1)
                });
            }
            LogTrigger::Spike {
                window,
                baseline,
                ratio,
                min_count,
            } => {
                let (window, baseline) = (nanos(*window), nanos(*baseline));
                let baseline_start = at.saturating_sub(window).saturating_sub(baseline);
                let watched = baseline_start >= started;
                let window_start = at.saturating_sub(window);
                let retention = window.saturating_add(baseline);
                self.evaluate_counts(rule, &due, retention, out, |key| {
                    let recent = key.count(window_start, at);
                    let before = key.count(baseline_start, window_start).max(1);
                    let times_baseline =
                        (recent as f64 / window as f64) / (before as f64 / baseline as f64);
                    let holds = watched && recent >= *min_count && times_baseline >= *ratio;
                    (times_baseline, holds)
                });
            }
            LogTrigger::Flatline { count, window } => {
                let window = nanos(*window);
                if log.group_by.is_empty() {
                    self.keys
                        .entry(BaseLabels::new())
                        .or_insert_with(|| KeyState {
                            first_seen: started,
                            ..KeyState::default()
                        });
                }
                let window_start = at.saturating_sub(window);
                for (labels, key) in &mut self.keys {
                    if !due.includes(labels) {
                        continue;
                    }
                    let lines = key.count(window_start, at);
                    let watched_since = key.first_seen.max(started);
                    let holds = at.saturating_sub(watched_since) >= window && lines < *count;
                    let value = Some(lines as f64);
                    step(
                        &mut key.alert,
                        rule,
                        labels,
                        &key.source,
                        at,
                        value,
                        holds,
                        out,
                    );
                    // Keys are kept while silent: that is when they fire.
                    key.forget_until(window_start);
                }
            }
            LogTrigger::NewValue {
                field,
                lookback,
                window,
                learn,
            } => {
                let (lookback, window) = (nanos(*lookback), nanos(*window));
                let learned_until = started.saturating_add(nanos(*learn));
                let mut new_keys = BTreeSet::new();
                for (labels, memory) in &mut self.values {
                    if !due.includes(labels) {
                        continue;
                    }
                    for (time, value) in memory.take_pending(at) {
                        let previous = memory.remember(value.clone(), time, MAX_REMEMBERED_VALUES);
                        let unseen =
                            previous.is_none_or(|seen| seen < time.saturating_sub(lookback));
                        // What came before a line later than the lookback is
                        // forgotten: it can only be remembered, not judged.
                        let judged = time >= learned_until && time > at.saturating_sub(lookback);
                        if unseen && judged {
                            let mut key: BTreeMap<String, String> =
                                labels.iter().cloned().collect();
                            key.insert(field.label_name().to_owned(), value);
                            let key: BaseLabels = key.into_iter().collect();
                            let state = self.keys.entry(key.clone()).or_default();
                            state.insert(time);
                            state.source.clone_from(&memory.source);
                            new_keys.insert(key);
                        }
                    }
                    memory.forget_until(at.saturating_sub(lookback));
                }
                self.values.retain(|_, memory| !memory.is_empty());
                let due = Due {
                    arrived: new_keys,
                    ..due
                };
                self.evaluate_counts(rule, &due, window, out, |key| {
                    let lines = key.count(at.saturating_sub(window), at);
                    (lines as f64, lines >= 1)
                });
            }
            LogTrigger::Cardinality { max, window, .. } => {
                let window = nanos(*window);
                let capacity = usize::try_from(*max).map_or(usize::MAX, |m| m.saturating_add(1));
                for (labels, memory) in &mut self.values {
                    if !due.includes(labels) {
                        continue;
                    }
                    for (time, value) in memory.take_pending(at) {
                        memory.remember(value, time, capacity);
                    }
                    memory.forget_until(at.saturating_sub(window));
                    let distinct = memory.last_seen.len() as u64;
                    let key = self.keys.entry(labels.clone()).or_default();
                    key.source.clone_from(&memory.source);
                    let (value, holds) = (Some(distinct as f64), distinct > *max);
                    step(
                        &mut key.alert,
                        rule,
                        labels,
                        &key.source,
                        at,
                        value,
                        holds,
                        out,
                    );
                }
                let keys = &self.keys;
                self.values.retain(|labels, memory| {
                    !memory.is_empty() || keys.get(labels).is_some_and(|k| k.alert.is_some())
                });
                self.keys.retain(|_, key| key.alert.is_some());
            }
        }
    }

    /// Evaluates the due keys with `condition`, which gives the value to compare
    /// and whether it holds; lines older than `retention` are forgotten, and so
    /// are keys without lines or alert.
    fn evaluate_counts(
        &mut self,
        rule: RuleRef<'_>,
        due: &Due,
        retention: i64,
        out: &mut Vec<AlertEvent>,
        condition: impl Fn(&KeyState) -> (f64, bool),
    ) {
        let mut evaluate = |labels: &BaseLabels, key: &mut KeyState| {
            let (value, holds) = condition(key);
            step(
                &mut key.alert,
                rule,
                labels,
                &key.source,
                due.at,
                Some(value),
                holds,
                out,
            );
            key.forget_until(due.at.saturating_sub(retention));
            key.alert.is_some() || !key.times.is_empty()
        };
        if due.tick {
            self.keys.retain(|labels, key| evaluate(labels, key));
            return;
        }
        // Between ticks only the keys whose lines arrived are due.
        for labels in &due.arrived {
            if let Some(key) = self.keys.get_mut(labels)
                && !evaluate(labels, key)
            {
                self.keys.remove(labels);
            }
        }
    }

    /// Carries the state over to a changed rule with the same `group_by`. A rule
    /// whose type or field changed starts over: what was counted means something
    /// else now.
    pub(crate) fn adopt(
        &mut self,
        old: RuleRef<'_>,
        new: RuleRef<'_>,
        at: i64,
        out: &mut Vec<AlertEvent>,
    ) {
        let (Some(before), Some(after)) = (log_rule(old), log_rule(new)) else {
            return;
        };
        if discriminant(&before.trigger) != discriminant(&after.trigger)
            || before.trigger.field() != after.trigger.field()
        {
            self.resolve_all(old, at, out);
            *self = LogState {
                started: self.started,
                ..LogState::default()
            };
            return;
        }
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

fn log_rule<'a>(rule: RuleRef<'a>) -> Option<&'a LogRule> {
    match &rule.rule.kind {
        crate::model::RuleKind::Log(log) => Some(log),
        crate::model::RuleKind::Metric(_) => None,
    }
}
