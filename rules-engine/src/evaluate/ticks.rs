//! The evaluator's clock moving forward, after each batch or an explicit advance:
//! the group ticks and log line arrivals it passes are evaluated in time order,
//! then the rules evaluated on arrival, then series gone stale are forgotten.

use super::alert::RuleRef;
use super::metric::evaluated_series_by_series;
use super::{Evaluator, MAX_CATCH_UP_TICKS, RuleState, metric_state, stale_after};
use crate::model::RuleKind;
use std::collections::BTreeSet;
use vigil_config::duration::nanos;
use vigil_proto::v1::AlertEvent;

impl Evaluator {
    pub(super) fn advance_clock(&mut self, time: Option<i64>) -> Vec<AlertEvent> {
        self.clock = self.clock.max(time);
        let mut out = Vec::new();
        if let Some(now) = self.clock {
            self.evaluate_until(now, &mut out);
        }
        self.evaluate_arrivals(&mut out);
        // Groups are evaluated one after the other; present their events in time.
        out.sort_by_key(|event| event.evaluated_at_unix_nano);
        out
    }

    /// Runs every group's ticks and pending line arrivals up to `now`, in time
    /// order within each group.
    fn evaluate_until(&mut self, now: i64, out: &mut Vec<AlertEvent>) {
        let mut ticked = false;
        for (group, state) in self.rules.groups.iter().zip(&mut self.groups) {
            let interval = nanos(group.interval).max(1);
            let stale_after = stale_after(interval);
            let first_tick = match state.last_tick {
                Some(last) => (last.div_euclid(interval) + 1).saturating_mul(interval),
                None => now.div_euclid(interval) * interval,
            };
            let last_tick = now.div_euclid(interval) * interval;
            let first_tick = first_tick
                .max(last_tick.saturating_sub((MAX_CATCH_UP_TICKS - 1).saturating_mul(interval)));
            let ticks: BTreeSet<i64> = (0..)
                .map_while(|n: i64| {
                    let tick = first_tick.checked_add(n.checked_mul(interval)?)?;
                    (tick <= last_tick).then_some(tick)
                })
                .collect();
            let mut instants = ticks.clone();
            for rule_state in &state.rules {
                if let RuleState::Log(log) = rule_state {
                    instants.extend(log.arrival_instants().filter(|i| *i <= now));
                }
            }
            for at in instants {
                let tick = ticks.contains(&at);
                let mut by_series = if tick {
                    let pass = &mut state.series_pass;
                    pass.evaluate(
                        group,
                        &mut state.rules,
                        at,
                        stale_after,
                        &self.store,
                        &self.journal,
                    )
                } else {
                    Vec::new()
                }
                .into_iter()
                .peekable();
                for (index, (rule, rule_state)) in
                    group.rules.iter().zip(&mut state.rules).enumerate()
                {
                    let rule_ref = RuleRef {
                        group: &group.name,
                        rule,
                        journal: &self.journal,
                    };
                    match (&rule.kind, rule_state) {
                        (RuleKind::Metric(metric), RuleState::Metric(_))
                            if tick && evaluated_series_by_series(metric) =>
                        {
                            while let Some((_, event)) =
                                by_series.next_if(|(rule, _)| *rule == index)
                            {
                                out.push(event);
                            }
                        }
                        (RuleKind::Metric(metric), RuleState::Metric(series)) if tick => {
                            let (store, dormant) = (&self.store, &mut self.dormant);
                            series.evaluate(rule_ref, metric, at, stale_after, store, dormant, out);
                        }
                        (RuleKind::Log(log), RuleState::Log(keys)) => {
                            let room = self
                                .max_series
                                .saturating_sub(self.store.len().saturating_add(self.log_keys));
                            let held = keys.held(log);
                            keys.evaluate(rule_ref, log, at, tick, room, out);
                            self.log_keys = (self.log_keys + keys.held(log)).saturating_sub(held);
                        }
                        _ => {}
                    }
                }
            }
            if let Some(tick) = ticks.last() {
                state.last_tick = Some(*tick);
                ticked = true;
            }
            state.evaluated_to = state.evaluated_to.max(Some(now));
        }
        if ticked {
            self.forget_stale_series(now);
        }
    }

    /// Evaluates the rules evaluated on arrival for the series whose newest
    /// sample just arrived, at the sample's time, or at the group's last tick for
    /// a sample older than that tick (the tick was evaluated without it), so that
    /// no alert steps back in time.
    fn evaluate_arrivals(&mut self, out: &mut Vec<AlertEvent>) {
        let mut arrivals = std::mem::take(&mut self.arrivals);
        for ((group, index), slot, time) in arrivals.drain(..) {
            let (rules, state) = (&self.rules.groups[group], &mut self.groups[group]);
            let rule = &rules.rules[index];
            let (RuleKind::Metric(metric), RuleState::Metric(series)) =
                (&rule.kind, &mut state.rules[index])
            else {
                continue;
            };
            let rule_ref = RuleRef {
                group: &rules.name,
                rule,
                journal: &self.journal,
            };
            let at = state.last_tick.map_or(time, |tick| tick.max(time));
            let stale_after = stale_after(nanos(rules.interval).max(1));
            series.evaluate_arrival(rule_ref, metric, slot, at, stale_after, &self.store, out);
        }
        self.arrivals = arrivals;
    }

    /// Forgets the series that have been silent for as long as makes them stale
    /// to every rule that selects them, unless one of those rules still holds an
    /// alert for them (it resolves first, after `keep_firing_for`).
    fn forget_stale_series(&mut self, now: i64) {
        if now < self.next_stale_check {
            return;
        }
        let groups = &mut self.groups;
        let mut next_check = i64::MAX;
        self.store.retain(|slot, series| {
            if !series.is_stale(now) {
                next_check = next_check.min(series.stale_at());
                return true;
            }
            if series.selected_by.iter().any(|&position| {
                metric_state(groups, position).is_some_and(|state| state.holds_alert(slot))
            }) {
                // Looked at again at the next tick: its alert may have resolved.
                next_check = next_check.min(now.saturating_add(1));
                return true;
            }
            for &position in &series.selected_by {
                if let Some(state) = metric_state(groups, position) {
                    state.forget(slot);
                }
            }
            false
        });
        self.next_stale_check = next_check;
    }
}
