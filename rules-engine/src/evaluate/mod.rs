//! The rules engine of the `alert` stage: metric and log batches in, alert events
//! out, in event time and without I/O or clocks, so that a replay of the same
//! batches gives the same events.
//!
//! Time: the evaluator's clock is the largest event time seen (sample or line
//! timestamp, or a time given to [`Evaluator::advance_to`]); it never goes back.
//! Each group is evaluated at the multiples of its `interval` that the clock
//! passes (catching up at most [`MAX_CATCH_UP_TICKS`] ticks after a jump), using
//! the samples with a timestamp at or before the tick; a tick is evaluated as soon
//! as the clock reaches it, so data for an already evaluated time (another host's
//! batch of the same second, a late batch) counts from the next tick on. Log
//! rules are also evaluated when matching lines arrive, at the line's event time
//! (or at the group's last evaluation, for late lines), so a burst fires between
//! ticks; so are metric rules on each series' latest value, when a sample
//! becomes its series' newest (at its time, or at the group's last tick for an
//! older one), and their ticks then visit only the series that hold an alert.
//!
//! Series: a metric series is the sample name plus its labels: the resource's
//! attributes, `host` (the resource's host name) and the sample's labels (later
//! ones win). A series whose newest sample is older than `max(5m, 2 × interval)`
//! at a tick has stopped reporting: it has no value, so its alert resolves (after
//! `keep_firing_for`), and it is forgotten. Each series is stored once, however
//! many rules select it (see [`series`]), and recognised by a hash of the
//! resource's host and attributes and the sample's name and labels as they come
//! in the batch; an agent that sent the same labels in another order would make
//! a second series with the same labels.
//!
//! At most `max_series` series and log keys are held together (see
//! [`Evaluator::set_max_series`]): one budget for all metric series and the
//! keys of all log rules (a `group_by` key, see [`log`]), not a share per
//! rule, since it bounds the memory of the whole evaluator. A sample of a new
//! series beyond is refused, and counted by the rules that would have selected
//! it; a line of a new log key beyond is refused and counted by its rule; so
//! that a flood of label or field values cannot exhaust memory. Metric series
//! and log keys compete for the budget: a flood of one can refuse the other.
//!
//! Reloads keep state by group name and alert name; a rule moved to another
//! group, or renamed, starts over (its firing alerts resolve).
//!
//! Alerts: per rule and series (or log group key), inactive -> pending (condition
//! true, `PENDING` event) -> firing once it held for `for` (`FIRING`; `for: 0`
//! fires at once) -> resolved when it has been false for `keep_firing_for`
//! (`RESOLVED` with `ends_at`). A pending alert whose condition clears goes back to
//! inactive without an event.

mod alert;
mod dormant;
mod log;
mod measure;
mod metric;
mod reload;
mod series;
mod series_pass;
mod ticks;

use super::condition::Subject;
use super::log_filter::{LogRecord, MessagePrefilter};
use super::model::{MetricRule, Rule, RuleKind, RuleSet};
pub use alert::Source;
use alert::{BaseLabels, RuleRef, StateJournal};
use dormant::Dormant;
use log::{Intake, LogState};
use metric::{MetricState, evaluated_on_arrival, selects};
use series::{
    BatchResource, Reading, Retention, RulePosition, SeriesStore, Slot, StoredSeries, ValueKind,
    ends_series,
};
use series_pass::SeriesPass;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;
use vigil_config::duration::nanos;
use vigil_proto::v1::{AlertEvent, AlertState, LogBatch, LogSource, MetricBatch, Resource};
use vigil_proto::view::MetricBatchView;

/// Most ticks of one group evaluated when the clock jumps; earlier ticks of the
/// jump are skipped (their samples would be stale at the later ticks anyway).
pub const MAX_CATCH_UP_TICKS: i64 = 10_000;

/// A series that has not reported for this long (or two intervals of its group,
/// when longer) has stopped reporting, as Prometheus' lookback of 5 minutes.
pub const STALE_AFTER: Duration = Duration::from_secs(300);

/// Evaluates a rule set over metric and log batches in event time.
#[derive(Debug)]
pub struct Evaluator {
    rules: RuleSet,
    /// Parallel to `rules.groups`.
    groups: Vec<GroupState>,
    clock: Option<i64>,
    /// Metric name -> (group index, rule index) of the rules on it.
    by_metric: HashMap<String, Vec<RulePosition>>,
    /// The series of the metrics in `by_metric`.
    store: SeriesStore,
    /// No stored series goes stale before this time, so ticks before it need
    /// not look for stale series (it would read every series).
    next_stale_check: i64,
    /// The log rules, by the dataset they read.
    log_rules: LogRules,
    /// Samples that became the newest of their series in the batch being taken
    /// in, for the rules evaluated on arrival: (rule, series, sample time).
    arrivals: Vec<(RulePosition, Slot, i64)>,
    /// State changes not yet taken by the stage.
    journal: StateJournal,
    /// Alerts of other consumers or of an earlier run, from the state topic.
    dormant: Dormant,
    /// Most series and log keys held together; new ones beyond are refused.
    max_series: usize,
    /// Keys the log rules hold (the sum of their [`LogState::held`]), kept up to
    /// date wherever their keys change.
    log_keys: usize,
    /// Samples of new series refused since the last `take_refused_series`.
    refused: RefusedSeries,
}

/// Samples of new series, and log lines of new keys, refused because
/// `max_series` series and log keys were held.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RefusedSeries {
    /// By the name of each rule that would have selected the series, and of
    /// each log rule whose line was refused.
    pub by_rule: BTreeMap<String, u64>,
    /// The metrics of the refused series.
    pub metrics: BTreeSet<String>,
}

impl RefusedSeries {
    /// Nothing was refused.
    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty() && self.by_rule.is_empty()
    }

    fn count(&mut self, rule: &str, refused: u64) {
        if let Some(count) = self.by_rule.get_mut(rule) {
            *count += refused;
        } else {
            self.by_rule.insert(rule.to_owned(), refused);
        }
    }
}

#[derive(Debug, Default)]
struct GroupState {
    last_tick: Option<i64>,
    /// Instants up to here have been evaluated; lines older than this that arrive
    /// now are evaluated here.
    evaluated_to: Option<i64>,
    /// Parallel to the group's rules.
    rules: Vec<RuleState>,
    /// How its ticks visit the series of the rules that judge each on its own.
    series_pass: SeriesPass,
}

#[derive(Debug)]
enum RuleState {
    Metric(MetricState),
    Log(LogState),
}

impl RuleState {
    fn new(rule: &Rule) -> Self {
        match rule.kind {
            RuleKind::Metric(_) => RuleState::Metric(MetricState::default()),
            RuleKind::Log(_) => RuleState::Log(LogState::default()),
        }
    }

    fn resolve_all(&self, rule: RuleRef<'_>, at: i64, out: &mut Vec<AlertEvent>) {
        match self {
            RuleState::Metric(state) => state.resolve_all(rule, at, out),
            RuleState::Log(state) => state.resolve_all(rule, at, out),
        }
    }
}

impl Evaluator {
    pub fn new(rules: RuleSet) -> Self {
        let mut evaluator = Evaluator {
            groups: rules
                .groups
                .iter()
                .map(|group| GroupState {
                    rules: group.rules.iter().map(RuleState::new).collect(),
                    ..GroupState::default()
                })
                .collect(),
            rules,
            clock: None,
            by_metric: HashMap::new(),
            store: SeriesStore::default(),
            next_stale_check: i64::MIN,
            log_rules: LogRules::default(),
            arrivals: Vec::new(),
            journal: StateJournal::default(),
            dormant: Dormant::default(),
            max_series: usize::MAX,
            log_keys: 0,
            refused: RefusedSeries::default(),
        };
        evaluator.index();
        evaluator
    }

    /// The rules being evaluated.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// How many metric series the evaluator holds: those of the metrics some rule
    /// watches, until they go stale.
    pub fn series(&self) -> usize {
        self.store.len()
    }

    /// How many keys the log rules hold, counted with the metric series against
    /// `max_series`: `group_by` keys with lines in their window or an alert.
    pub fn log_keys(&self) -> usize {
        self.log_keys
    }

    /// Holds at most `max_series` metric series and log keys together from now
    /// on; those held already stay.
    pub fn set_max_series(&mut self, max_series: usize) {
        self.max_series = max_series;
    }

    /// The samples of new series and the log lines of new keys refused since
    /// the last call.
    pub fn take_refused_series(&mut self) -> RefusedSeries {
        let mut refused = std::mem::take(&mut self.refused);
        for (group, state) in self.rules.groups.iter().zip(&mut self.groups) {
            for (rule, rule_state) in group.rules.iter().zip(&mut state.rules) {
                if let RuleState::Log(log) = rule_state {
                    match log.take_refused() {
                        0 => {}
                        lines => refused.count(&rule.alert, lines),
                    }
                }
            }
        }
        refused
    }

    /// How many distinct line times of log keys were merged into a later one
    /// since the last call, by rule: keys that held [`crate::MAX_LINE_TIMES`]
    /// (or their rule's threshold) in their window.
    pub fn take_merged_log_times(&mut self) -> BTreeMap<String, u64> {
        let mut merged = BTreeMap::new();
        for (group, state) in self.rules.groups.iter().zip(&mut self.groups) {
            for (rule, rule_state) in group.rules.iter().zip(&mut state.rules) {
                if let RuleState::Log(log) = rule_state {
                    match log.take_merged_times() {
                        0 => {}
                        times => *merged.entry(rule.alert.clone()).or_default() += times,
                    }
                }
            }
        }
        merged
    }

    /// How many more series or log keys `max_series` leaves room for.
    fn room(&self) -> usize {
        self.max_series
            .saturating_sub(self.store.len().saturating_add(self.log_keys))
    }

    /// The evaluator's clock: the largest event time seen, in Unix nanoseconds.
    pub fn now(&self) -> Option<i64> {
        self.clock
    }

    /// Takes in a batch of samples; returns the events of the evaluations the
    /// clock passed.
    pub fn observe_metrics(&mut self, batch: &MetricBatch) -> Vec<AlertEvent> {
        self.observe_metrics_from(batch, &Source::default())
    }

    /// [`observe_metrics`](Self::observe_metrics) of a batch that arrived from
    /// `source`.
    pub fn observe_metrics_from(
        &mut self,
        batch: &MetricBatch,
        source: &Source,
    ) -> Vec<AlertEvent> {
        let default_resource = Resource::default();
        let resource = batch.resource.as_ref().unwrap_or(&default_resource);
        let resource = BatchResource::new(
            &resource.host_name,
            resource
                .attributes
                .iter()
                .map(|l| (l.name.as_str(), l.value.as_str())),
            &mut self.store.buffer,
        );
        let mut latest = None;
        for sample in &batch.samples {
            let labels = sample
                .labels
                .iter()
                .map(|l| (l.name.as_str(), l.value.as_str()));
            let Some((reading, kind)) = Reading::of(sample.time_unix_nano, sample.value) else {
                if ends_series(sample.value) {
                    self.end_series(&resource, &sample.name, labels, sample.time_unix_nano);
                }
                continue;
            };
            latest = latest.max(Some(reading.time));
            self.observe_sample(&resource, &sample.name, labels, reading, kind, source);
        }
        self.advance_clock(latest)
    }

    /// [`observe_metrics_from`](Self::observe_metrics_from) of a batch decoded as
    /// a view of its payload, as the stage reads them: no string of the batch is
    /// copied unless it names a new series.
    pub fn observe_metric_view(
        &mut self,
        batch: &MetricBatchView<'_>,
        source: &Source,
    ) -> Vec<AlertEvent> {
        let resource = BatchResource::new(
            batch.resource.host_name,
            batch.resource.attributes.iter().map(|l| (l.name, l.value)),
            &mut self.store.buffer,
        );
        let mut latest = None;
        for sample in &batch.samples {
            let labels = batch.labels(sample).iter().map(|l| (l.name, l.value));
            let Some((reading, kind)) = Reading::of(sample.time_unix_nano, sample.value) else {
                if ends_series(sample.value) {
                    self.end_series(&resource, sample.name, labels, sample.time_unix_nano);
                }
                continue;
            };
            latest = latest.max(Some(reading.time));
            self.observe_sample(&resource, sample.name, labels, reading, kind, source);
        }
        self.advance_clock(latest)
    }

    /// Notes a staleness marker of a known series: it has no value from `time`
    /// on, and the rules evaluated on arrival see that at once.
    fn end_series<'l>(
        &mut self,
        resource: &BatchResource<'_>,
        name: &str,
        labels: impl Iterator<Item = (&'l str, &'l str)>,
        time: i64,
    ) {
        if !self.by_metric.contains_key(name) {
            return;
        }
        let id = resource.series_id(name, labels, &mut self.store.buffer);
        if let Some(slot) = self.store.find(id)
            && let Some(series) = self.store.get_mut(slot)
        {
            series.end(time);
            let arrivals = series.evaluated_on_arrival.iter();
            self.arrivals
                .extend(arrivals.map(|&position| (position, slot, time)));
        }
    }

    /// Adds a sample to its series; a series seen for the first time is stored
    /// and joins the rules that select it.
    fn observe_sample<'l>(
        &mut self,
        resource: &BatchResource<'_>,
        name: &str,
        labels: impl Iterator<Item = (&'l str, &'l str)> + Clone,
        reading: Reading,
        kind: ValueKind,
        source: &Source,
    ) {
        let Some(positions) = self.by_metric.get(name) else {
            return;
        };
        let id = resource.series_id(name, labels.clone(), &mut self.store.buffer);
        if let Some(slot) = self.store.find(id)
            && let Some(series) = self.store.get_mut(slot)
        {
            series.insert(reading, kind, source);
            if series.newest() == reading.time {
                let arrivals = series.evaluated_on_arrival.iter();
                self.arrivals
                    .extend(arrivals.map(|&position| (position, slot, reading.time)));
            }
            return;
        }
        let labels = resource.series_labels(labels);
        let mut series = StoredSeries::new(id, name, labels, source.clone());
        self.select(&mut series, positions);
        if self.room() == 0 {
            self.refuse(&series);
            return;
        }
        series.insert(reading, kind, source);
        self.next_stale_check = self.next_stale_check.min(series.stale_at());
        let selected_by = series.selected_by.clone();
        let arrivals = series.evaluated_on_arrival.clone();
        let slot = self.store.add(series);
        for position in selected_by {
            self.join(position, slot);
        }
        self.arrivals.extend(
            arrivals
                .into_iter()
                .map(|position| (position, slot, reading.time)),
        );
    }

    /// Counts a new series refused at `max_series`, by the rules selecting it.
    fn refuse(&mut self, series: &StoredSeries) {
        for &(group, index) in &series.selected_by {
            let rule = &self.rules.groups[group].rules[index].alert;
            self.refused.count(rule, 1);
        }
        if !self.refused.metrics.contains(series.name.as_str()) {
            self.refused.metrics.insert(series.name.to_string());
        }
    }

    /// Works out which of the rules at `positions` (those on its metric) select
    /// `series`, which of them evaluate it on arrival, and how long it is kept.
    fn select(&self, series: &mut StoredSeries, positions: &[RulePosition]) {
        let selecting = |&position: &RulePosition| {
            self.metric_rule(position)
                .filter(|metric| selects(metric, &series.labels))
                .map(|metric| (position, evaluated_on_arrival(metric)))
        };
        let selected: Vec<(RulePosition, bool)> = positions.iter().filter_map(selecting).collect();
        series.selected_by = selected.iter().map(|&(position, _)| position).collect();
        series.evaluated_on_arrival = selected
            .iter()
            .filter(|(_, on_arrival)| *on_arrival)
            .map(|&(position, _)| position)
            .collect();
        series.retention = self.retention(&series.selected_by);
    }

    /// The metric rule at `position`.
    fn metric_rule(&self, (group, index): RulePosition) -> Option<&MetricRule> {
        match &self.rules.groups[group].rules[index].kind {
            RuleKind::Metric(metric) => Some(metric),
            RuleKind::Log(_) => None,
        }
    }

    /// How long the rules at `positions` need the samples of a series they select.
    /// A series no rule selects is remembered as such until it goes stale.
    fn retention(&self, positions: &[RulePosition]) -> Retention {
        let unselected = Retention {
            stale_after: nanos(STALE_AFTER),
            ..Retention::default()
        };
        Retention::combine(
            std::iter::once(unselected).chain(positions.iter().filter_map(|&(group, index)| {
                let metric = self.metric_rule((group, index))?;
                let interval = nanos(self.rules.groups[group].interval);
                let stale_after = stale_after(interval);
                let window = nanos(metric.condition.window());
                let absent = matches!(metric.condition.subject, Subject::Absent(_));
                Some(Retention {
                    keep: if absent { 0 } else { window.max(stale_after) }.saturating_add(interval),
                    stale_after,
                    watched_for_absence: absent,
                })
            })),
        )
    }

    /// Makes the series in `slot` one of the series of the rule at `position`; a
    /// new member resumes its alert if the state topic had one.
    fn join(&mut self, (group, index): RulePosition, slot: Slot) {
        let RuleState::Metric(state) = &mut self.groups[group].rules[index] else {
            return;
        };
        let Some(series) = self.store.get(slot) else {
            return;
        };
        if !state.join(slot) {
            return;
        }
        let rule = RuleRef {
            group: &self.rules.groups[group].name,
            rule: &self.rules.groups[group].rules[index],
            journal: &self.journal,
        };
        // The alerts of a rule with `by`/`aggregate` belong to its groups of
        // series, which resume theirs when first evaluated.
        if matches!(&rule.rule.kind, RuleKind::Metric(metric) if metric.aggregation.is_some()) {
            return;
        }
        if let Some(alert) = self.dormant.resume(rule, &series.labels, &series.source) {
            state.install(slot, alert);
        }
    }

    /// Takes in a batch of log lines; returns the events of the evaluations the
    /// lines and the clock caused.
    pub fn observe_logs(&mut self, batch: &LogBatch) -> Vec<AlertEvent> {
        self.observe_logs_from(batch, &Source::default())
    }

    /// [`observe_logs`](Self::observe_logs) of a batch that arrived from `source`.
    pub fn observe_logs_from(&mut self, batch: &LogBatch, from: &Source) -> Vec<AlertEvent> {
        let default_resource = Resource::default();
        let default_source = LogSource::default();
        let resource = batch.resource.as_ref().unwrap_or(&default_resource);
        let source = batch.source.as_ref().unwrap_or(&default_source);
        let latest = batch.lines.iter().map(|l| l.event_time_unix_nano).max();
        let rules = self.log_rules.of_dataset(&source.dataset);
        for line in batch.lines.iter().filter(|_| !rules.positions.is_empty()) {
            let record = LogRecord::new(resource, source, line);
            let candidates = rules.prefilter.scan(&record.message);
            if rules.prefilter.rejects_all(&candidates) {
                continue;
            }
            let time = line.event_time_unix_nano;
            for (candidate, &(group, index)) in rules.positions.iter().enumerate() {
                if !candidates.may_pass(candidate) {
                    continue;
                }
                let RuleKind::Log(rule) = &self.rules.groups[group].rules[index].kind else {
                    continue;
                };
                if rule.dataset.as_ref().is_some_and(|d| *d != source.dataset)
                    || rule.filter.as_ref().is_some_and(|f| !f.matches(&record))
                {
                    continue;
                }
                let key: BaseLabels = rule
                    .group_by
                    .iter()
                    .map(|field| (field.label_name().to_owned(), record.get(field).to_owned()))
                    .collect::<BTreeMap<_, _>>()
                    .into_iter()
                    .collect();
                let room = self.room() > 0;
                let group_state = &mut self.groups[group];
                let instant = time.max(group_state.evaluated_to.unwrap_or(time));
                let RuleState::Log(state) = &mut group_state.rules[index] else {
                    continue;
                };
                let held = state.held(rule);
                let intake = state.observe(rule, key.clone(), &record, time, instant, from, room);
                if intake == Intake::NewKey {
                    let rule = RuleRef {
                        group: &self.rules.groups[group].name,
                        rule: &self.rules.groups[group].rules[index],
                        journal: &self.journal,
                    };
                    if let Some(alert) = self.dormant.resume(rule, &key, from) {
                        state.install(&key, alert);
                    }
                }
                self.log_keys = (self.log_keys + state.held(rule)).saturating_sub(held);
            }
        }
        self.advance_clock(latest)
    }

    /// Takes the alert states that changed since the last call, in order: what the
    /// stage writes to the state topic (a `RESOLVED` state deletes the record).
    pub fn take_state_changes(&mut self) -> Vec<AlertState> {
        self.journal.take()
    }

    /// Remembers an alert from the state topic (written by an earlier run, or by
    /// the consumer that evaluated its series before a rebalance). It resumes,
    /// with its `for` timer and without a second notification, when its series
    /// shows up here; see [`take_resumed`](Self::take_resumed).
    pub fn restore(&mut self, state: AlertState) {
        self.dormant.insert(state);
    }

    /// Forgets a restored alert that ended elsewhere (its record was deleted).
    pub fn forget_restored(&mut self, fingerprint: &str) {
        self.dormant.remove(fingerprint);
    }

    /// Restored alerts that resumed since the last call: each as a pending or
    /// firing event at its last evaluation, with the record it resumed from.
    pub fn take_resumed(&mut self) -> Vec<(AlertEvent, AlertState)> {
        self.dormant.take_resumed()
    }

    /// Forgets, without events, the series and alerts whose data arrives on
    /// partitions `owned` no longer accepts (they moved to another consumer,
    /// which resumes them from the state topic).
    pub fn release(&mut self, owned: &dyn Fn(&Source) -> bool) {
        let groups = &mut self.groups;
        self.store.retain(|slot, series| {
            if owned(&series.source) {
                return true;
            }
            for &position in &series.selected_by {
                if let Some(state) = metric_state(groups, position) {
                    state.forget(slot);
                }
            }
            false
        });
        for state in &mut self.groups {
            for rule_state in &mut state.rules {
                match rule_state {
                    RuleState::Metric(metric) => metric.release(owned),
                    RuleState::Log(log) => log.release(owned),
                }
            }
        }
        self.log_keys = self.count_log_keys();
    }

    /// The keys all log rules hold, counted anew.
    fn count_log_keys(&self) -> usize {
        let mut keys = 0;
        for (group, state) in self.rules.groups.iter().zip(&self.groups) {
            for (rule, rule_state) in group.rules.iter().zip(&state.rules) {
                if let (RuleKind::Log(log), RuleState::Log(held)) = (&rule.kind, rule_state) {
                    keys += held.held(log);
                }
            }
        }
        keys
    }

    /// Ends restored alerts of partitions this consumer owns whose series has not
    /// shown up for as long as makes a series stale (plus the rule's window and
    /// `keep_firing_for`): their source went away while no one evaluated it. A
    /// firing one resolves with an event; a pending one ends silently.
    pub fn end_unresumed(&mut self, owned: &dyn Fn(&Source) -> bool) -> Vec<AlertEvent> {
        let Some(now) = self.clock else {
            return Vec::new();
        };
        self.dormant
            .end_unresumed(&self.rules, &self.journal, owned, now)
    }

    /// Lets event time pass without data: `for` timers complete, log windows slide,
    /// series that stopped reporting resolve. A time before the clock changes
    /// nothing.
    pub fn advance_to(&mut self, now_unix_nano: i64) -> Vec<AlertEvent> {
        self.advance_clock(Some(now_unix_nano))
    }

    /// The pending and firing alerts, as events evaluated at the clock: what a
    /// restarted pager would need to know, and what rule tests compare.
    pub fn alerts(&self) -> Vec<AlertEvent> {
        let at = self.clock.unwrap_or(0);
        let mut events = Vec::new();
        for (group, state) in self.rules.groups.iter().zip(&self.groups) {
            for (rule, rule_state) in group.rules.iter().zip(&state.rules) {
                let rule = RuleRef {
                    group: &group.name,
                    rule,
                    journal: &self.journal,
                };
                let alerts: Vec<&alert::ActiveAlert> = match rule_state {
                    RuleState::Metric(state) => state.alerts().collect(),
                    RuleState::Log(state) => state.alerts().collect(),
                };
                events.extend(alerts.into_iter().map(|a| rule.event(a, a.status(), at)));
            }
        }
        events
    }

    fn index(&mut self) {
        self.by_metric.clear();
        for (group_index, group) in self.rules.groups.iter().enumerate() {
            for (rule_index, rule) in group.rules.iter().enumerate() {
                if let RuleKind::Metric(metric) = &rule.kind {
                    self.by_metric
                        .entry(metric.metric.clone())
                        .or_default()
                        .push((group_index, rule_index));
                }
            }
        }
        self.log_rules = LogRules::new(&self.rules);
        self.log_keys = self.count_log_keys();
        self.select_stored_series();
    }

    /// Works out again which rules select each stored series, after the rules
    /// changed: series join the rules that now select them (resuming their
    /// alerts from the state topic, if it had any).
    fn select_stored_series(&mut self) {
        // How long series are kept may have changed.
        self.next_stale_check = i64::MIN;
        let mut store = std::mem::take(&mut self.store);
        let mut joins = Vec::new();
        for (slot, stored) in store.iter_mut() {
            let positions = self
                .by_metric
                .get(&stored.name)
                .map_or(&[][..], Vec::as_slice);
            self.select(stored, positions);
            joins.extend(stored.selected_by.iter().map(|&position| (position, slot)));
        }
        self.store = store;
        for (position, slot) in joins {
            self.join(position, slot);
        }
    }
}

/// The log rules that read one dataset: those of the dataset and those of every
/// dataset, in rule set order, with the prefilter of their message regexes.
#[derive(Debug)]
struct DatasetRules {
    positions: Vec<RulePosition>,
    prefilter: MessagePrefilter,
}

impl DatasetRules {
    fn new(rules: &RuleSet, positions: Vec<RulePosition>) -> Self {
        let prefilter = MessagePrefilter::new(positions.iter().map(|&(group, index)| {
            match &rules.groups[group].rules[index].kind {
                RuleKind::Log(log) => log.filter.as_ref(),
                RuleKind::Metric(_) => None,
            }
        }));
        DatasetRules {
            positions,
            prefilter,
        }
    }
}

/// The log rules by the dataset they read: a batch's lines (all of one
/// dataset) are only offered to the rules that read it.
#[derive(Debug)]
struct LogRules {
    by_dataset: HashMap<String, DatasetRules>,
    /// The rules of every dataset, for a dataset no rule names.
    any_dataset: DatasetRules,
}

impl Default for LogRules {
    fn default() -> Self {
        LogRules::new(&RuleSet::default())
    }
}

impl LogRules {
    fn new(rules: &RuleSet) -> Self {
        let mut positions: Vec<(RulePosition, Option<&str>)> = Vec::new();
        for (group_index, group) in rules.groups.iter().enumerate() {
            for (rule_index, rule) in group.rules.iter().enumerate() {
                if let RuleKind::Log(log) = &rule.kind {
                    positions.push(((group_index, rule_index), log.dataset.as_deref()));
                }
            }
        }
        let reading = |dataset: Option<&str>| -> Vec<RulePosition> {
            positions
                .iter()
                .filter(|(_, reads)| reads.is_none() || *reads == dataset)
                .map(|(position, _)| *position)
                .collect()
        };
        let by_dataset = positions
            .iter()
            .filter_map(|(_, dataset)| *dataset)
            .map(|dataset| {
                let rules_of_dataset = DatasetRules::new(rules, reading(Some(dataset)));
                (dataset.to_owned(), rules_of_dataset)
            })
            .collect();
        LogRules {
            by_dataset,
            any_dataset: DatasetRules::new(rules, reading(None)),
        }
    }

    fn of_dataset(&self, dataset: &str) -> &DatasetRules {
        self.by_dataset.get(dataset).unwrap_or(&self.any_dataset)
    }
}

/// The state of the metric rule at `position`.
fn metric_state(
    groups: &mut [GroupState],
    (group, index): RulePosition,
) -> Option<&mut MetricState> {
    match groups.get_mut(group)?.rules.get_mut(index)? {
        RuleState::Metric(state) => Some(state),
        RuleState::Log(_) => None,
    }
}

/// How long a series of a group evaluated every `interval` may be silent before
/// it has no value: [`STALE_AFTER`], or two intervals when longer.
fn stale_after(interval: i64) -> i64 {
    nanos(STALE_AFTER).max(interval.saturating_mul(2))
}

#[cfg(test)]
mod tests;
