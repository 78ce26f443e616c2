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
//!
//! Bounds, so that a flood of lines cannot exhaust memory: a key keeps one count
//! per distinct event time, at most [`MAX_LINE_TIMES`] of them (or the rule's
//! threshold, when larger; older times merge into the next later one, see
//! there), and a new key is only taken in while the evaluator has room for it
//! under its `max_series` budget, which metric series and the keys of all log
//! rules share (see [`LogState::held`]); a line of a new key beyond it is
//! refused and counted by rule. Keys without lines in their window and without
//! an alert are forgotten at the next tick and free their room.

use super::alert::{ActiveAlert, BaseLabels, RuleRef, Source, resolve, step};
use super::metric::relabel;
use crate::log_filter::LogRecord;
use crate::model::{LogRule, LogTrigger, MAX_LINE_TIMES, MAX_REMEMBERED_VALUES};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::mem::discriminant;
use vigil_config::duration::nanos;
use vigil_proto::v1::AlertEvent;

#[derive(Debug, Default)]
pub(crate) struct KeyState {
    /// Matching lines by event time; for `new_value`, the times a new value was
    /// seen.
    times: LineTimes,
    /// Event time of the key's first line (`flatline` watches it from then on).
    first_seen: i64,
    alert: Option<ActiveAlert>,
    /// Where the key's latest line arrived.
    source: Source,
}

impl KeyState {
    fn insert(&mut self, time: i64) {
        self.times.insert(time);
    }

    /// Lines in `(from, to]`.
    fn count(&self, from: i64, to: i64) -> u64 {
        self.times.count(from, to)
    }

    /// Forgets lines at or before `horizon`: instants only move forward, so no
    /// later window holds them.
    fn forget_until(&mut self, horizon: i64) {
        self.times.forget_until(horizon);
    }
}

/// The lines of one key as runs of equal event times, sorted, each with the
/// running total of lines up to it, so that a count over any window is two
/// binary searches and a line at the newest time costs no memory.
#[derive(Debug, Default)]
struct LineTimes {
    /// (event time, lines at or before it since the running total began).
    runs: VecDeque<(i64, u64)>,
    /// The running total before the first run: lines forgotten, or merged into
    /// it.
    before: u64,
}

impl LineTimes {
    fn insert(&mut self, time: i64) {
        if let Some(last) = self.runs.back_mut()
            && last.0 <= time
        {
            if last.0 == time {
                last.1 += 1;
            } else {
                let total = last.1 + 1;
                self.runs.push_back((time, total));
            }
            return;
        }
        // A line older than the newest: every later running total grows.
        let position = self.runs.partition_point(|(t, _)| *t < time);
        if self.runs.get(position).is_none_or(|(t, _)| *t != time) {
            let total = self.total_through(position);
            self.runs.insert(position, (time, total));
        }
        for run in self.runs.range_mut(position..) {
            run.1 += 1;
        }
    }

    /// The running total through the first `runs` runs.
    fn total_through(&self, runs: usize) -> u64 {
        runs.checked_sub(1)
            .and_then(|last| self.runs.get(last))
            .map_or(self.before, |(_, total)| *total)
    }

    /// The running total of the lines at or before `time`.
    fn total_until(&self, time: i64) -> u64 {
        self.total_through(self.runs.partition_point(|(t, _)| *t <= time))
    }

    /// Lines in `(from, to]`.
    fn count(&self, from: i64, to: i64) -> u64 {
        self.total_until(to).saturating_sub(self.total_until(from))
    }

    fn forget_until(&mut self, horizon: i64) {
        let start = self.runs.partition_point(|(t, _)| *t <= horizon);
        self.before = self.total_through(start);
        self.runs.drain(..start);
    }

    /// Keeps at most `capacity` distinct times at or before `at` by merging the
    /// oldest into the next later one (the running total before it stays, so its
    /// lines count with that one); returns how many times were merged away.
    /// Whether a later window holds at least `capacity` lines stays exact: one
    /// that holds a merged line holds the `capacity` times it was merged behind,
    /// each with a line of its own.
    fn merge_oldest(&mut self, at: i64, capacity: usize) -> u64 {
        let evaluated = self.runs.partition_point(|(t, _)| *t <= at);
        let excess = evaluated.saturating_sub(capacity);
        self.runs.drain(..excess);
        excess as u64
    }

    fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Distinct times held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.runs.len()
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
    /// Lines (and new values) refused for want of room for a new key, since the
    /// last `take_refused`.
    refused: u64,
    /// Distinct line times merged into a later one, since the last
    /// `take_merged_times`.
    merged_times: u64,
}

/// What became of a matching line offered to a log rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Intake {
    /// Counted for a key held already, or a new key whose alert is not keyed by
    /// the line's key alone (`new_value`); or, for a rule on a field, a line
    /// without the field, which has no value and is not counted.
    Held,
    /// Counted for a new key, whose alert is keyed by the line's key: one
    /// restored from the state topic may resume.
    NewKey,
    /// Not counted: the line's key is new and there was no room for it.
    Refused,
}

impl LogState {
    /// Takes in a matching line of `key` at event time `time`, arrived from
    /// `source`, to be evaluated at `instant` (`time`, or later for a late line).
    /// A new key is only taken in when `room` says the evaluator can hold one
    /// more (see [`held`](Self::held)); otherwise the line is refused and
    /// counted.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn observe(
        &mut self,
        log: &LogRule,
        key: BaseLabels,
        record: &LogRecord<'_>,
        time: i64,
        instant: i64,
        source: &Source,
        room: bool,
    ) -> Intake {
        let intake = match log.trigger.field() {
            Some(field) => {
                let value = record.get(field);
                if value.is_empty() {
                    return Intake::Held;
                }
                let new = !self.values.contains_key(&key);
                if new && !room {
                    self.refused += 1;
                    return Intake::Refused;
                }
                let memory = self.values.entry(key.clone()).or_default();
                memory.pending.push((time, value.to_owned()));
                if memory.source != *source {
                    memory.source = source.clone();
                }
                if new && matches!(log.trigger, LogTrigger::Cardinality { .. }) {
                    Intake::NewKey
                } else {
                    Intake::Held
                }
            }
            None => {
                let new = !self.keys.contains_key(&key);
                if new && !room {
                    self.refused += 1;
                    return Intake::Refused;
                }
                let state = self.keys.entry(key.clone()).or_insert_with(|| KeyState {
                    first_seen: time,
                    source: source.clone(),
                    ..KeyState::default()
                });
                state.insert(time);
                if state.source != *source {
                    state.source = source.clone();
                }
                if new { Intake::NewKey } else { Intake::Held }
            }
        };
        self.arrivals.entry(instant).or_default().insert(key);
        intake
    }

    /// The keys this rule holds, as counted against the evaluator's
    /// `max_series`: each `group_by` key with lines in its window or an alert,
    /// and for `new_value` also each alert of a new value (keyed by the value
    /// too). A `cardinality` alert belongs to a `group_by` key counted already.
    pub(crate) fn held(&self, log: &LogRule) -> usize {
        match log.trigger {
            LogTrigger::Cardinality { .. } => self.values.len(),
            _ => self.keys.len() + self.values.len(),
        }
    }

    /// Lines refused for want of room since the last call.
    pub(crate) fn take_refused(&mut self) -> u64 {
        std::mem::take(&mut self.refused)
    }

    /// Distinct line times merged into later ones since the last call.
    pub(crate) fn take_merged_times(&mut self) -> u64 {
        std::mem::take(&mut self.merged_times)
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
    /// arrived for this instant. At most `room` new keys are made (a `new_value`
    /// rule makes one per new value; those beyond are refused and counted).
    pub(crate) fn evaluate(
        &mut self,
        rule: RuleRef<'_>,
        log: &LogRule,
        at: i64,
        tick: bool,
        room: usize,
        out: &mut Vec<AlertEvent>,
    ) {
        let capacity = line_capacity(&log.trigger);
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
                self.evaluate_counts(rule, &due, window, capacity, out, |key| {
                    let lines = key.count(at.saturating_sub(window), at);
                    (lines as f64, lines >= *count)
                });
            }
            LogTrigger::Any { window } => {
                let window = nanos(*window);
                self.evaluate_counts(rule, &due, window, capacity, out, |key| {
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
                self.evaluate_counts(rule, &due, retention, capacity, out, |key| {
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
                    self.merged_times += key.times.merge_oldest(at, capacity);
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
                let mut made = 0;
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
                            if !self.keys.contains_key(&key) {
                                if made == room {
                                    self.refused += 1;
                                    continue;
                                }
                                made += 1;
                            }
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
                self.evaluate_counts(rule, &due, window, capacity, out, |key| {
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
    /// are keys without lines or alert. A key keeps at most `capacity` distinct
    /// line times.
    fn evaluate_counts(
        &mut self,
        rule: RuleRef<'_>,
        due: &Due,
        retention: i64,
        capacity: usize,
        out: &mut Vec<AlertEvent>,
        condition: impl Fn(&KeyState) -> (f64, bool),
    ) {
        let merged_times = &mut self.merged_times;
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
            *merged_times += key.times.merge_oldest(due.at, capacity);
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
                refused: self.refused,
                merged_times: self.merged_times,
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

/// Most distinct line times a key of a rule with `trigger` keeps: enough for
/// its threshold, so that whether it holds stays exact.
fn line_capacity(trigger: &LogTrigger) -> usize {
    let threshold = match trigger {
        LogTrigger::Frequency { count, .. } | LogTrigger::Flatline { count, .. } => *count,
        LogTrigger::Spike { min_count, .. } => *min_count,
        LogTrigger::Any { .. } | LogTrigger::NewValue { .. } | LogTrigger::Cardinality { .. } => 0,
    };
    usize::try_from(threshold)
        .unwrap_or(usize::MAX)
        .max(MAX_LINE_TIMES)
}

fn log_rule<'a>(rule: RuleRef<'a>) -> Option<&'a LogRule> {
    match &rule.rule.kind {
        crate::model::RuleKind::Log(log) => Some(log),
        crate::model::RuleKind::Metric(_) => None,
    }
}

#[cfg(test)]
mod tests;
