//! Validation of a log rule's own fields (`logs`, `type` and its parameter block,
//! `group_by`) into the [`LogRule`] the evaluator offers log lines to.

use super::checker::Checker;
use super::raw::{RawCardinality, RawLogs, RawNewValue, RawSpike, RawThreshold, RawTrigger};
use crate::log_filter::{FilterError, LogField, LogFilter};
use crate::model::{LogRule, LogTrigger, MAX_REMEMBERED_VALUES};
use serde_saphyr::{Location, Spanned};
use std::time::Duration;

/// How long a `type: any` log alert stays active after the last matching line
/// when `threshold.window` is not given.
pub(super) const DEFAULT_ANY_WINDOW: Duration = Duration::from_secs(300);

/// Log rule types, as written in `type:`.
const LOG_TYPES: &str = "frequency, any, spike, flatline, new_value or cardinality";

impl Checker {
    pub(super) fn log_rule(
        &mut self,
        context: &str,
        location: Location,
        logs: Spanned<RawLogs>,
        trigger: RawTrigger,
        group_by: Option<Spanned<Vec<Spanned<String>>>>,
    ) -> Option<LogRule> {
        let RawLogs { dataset, filter } = logs.value;
        let filter = match filter {
            None => None,
            Some(text) => match LogFilter::parse(&text.value) {
                Ok(filter) => Some(filter),
                Err(FilterError::Regex { pattern, reason }) => {
                    return self.fail(
                        text.referenced,
                        format!("{context}invalid regex `{pattern}`: {reason}"),
                    );
                }
                Err(FilterError::Syntax(error)) => {
                    return self.fail(
                        text.referenced,
                        format!("{context}invalid log match `{}`: {error}", text.value),
                    );
                }
            },
        };
        let trigger = self.log_trigger(context, location, trigger)?;
        let mut fields = Vec::new();
        for field in group_by.map(|g| g.value).unwrap_or_default() {
            if field.value.trim().is_empty() {
                return self.fail(
                    field.referenced,
                    format!("{context}empty field name in `group_by`"),
                );
            }
            fields.push(LogField::from_name(&field.value));
        }
        Some(LogRule {
            dataset: dataset.map(|d| d.value),
            filter,
            trigger,
            group_by: fields,
        })
    }

    /// The `type` of a log rule with its parameter block: `threshold` for
    /// `frequency`, `any` and `flatline`, a block named after the type for the
    /// others. A block that does not belong to the type is an error, so a typo in
    /// `type` does not silently drop the parameters.
    fn log_trigger(
        &mut self,
        context: &str,
        location: Location,
        raw: RawTrigger,
    ) -> Option<LogTrigger> {
        let name = raw.name.as_ref().map_or("frequency", |t| t.value.as_str());
        let name_location = raw.name.as_ref().map_or(location, |t| t.referenced);
        let expected_block = match name {
            "frequency" | "any" | "flatline" => "threshold",
            "spike" | "new_value" | "cardinality" => name,
            unknown => {
                return self.fail(
                    name_location,
                    format!("{context}unknown type `{unknown}` (expected {LOG_TYPES})"),
                );
            }
        };
        let mut misplaced = false;
        for (block, block_location) in raw.blocks() {
            if let Some(block_location) = block_location.filter(|_| block != expected_block) {
                misplaced = true;
                self.fail::<()>(
                    block_location,
                    format!(
                        "{context}`{block}` does not apply to type `{name}` (it takes \
                         `{expected_block}`)"
                    ),
                );
            }
        }
        if misplaced {
            return None;
        }
        match name {
            "frequency" | "any" | "flatline" => {
                self.threshold_trigger(context, name, location, raw.threshold)
            }
            "spike" => self.spike_trigger(context, name_location, raw.spike),
            "new_value" => self.new_value_trigger(context, name_location, raw.new_value),
            _ => self.cardinality_trigger(context, name_location, raw.cardinality),
        }
    }

    /// A positive duration at `block.field`; `None` (after an error) when absent
    /// and required, or when zero or malformed.
    fn window_field(
        &mut self,
        context: &str,
        block: &str,
        field: &str,
        value: Option<&Spanned<String>>,
        block_location: Location,
        default: Option<Duration>,
    ) -> Option<Duration> {
        let Some(value) = value else {
            return default.or_else(|| {
                self.fail(
                    block_location,
                    format!("{context}`{block}.{field}` is required (a duration such as `5m`)"),
                )
            });
        };
        let parsed = self.duration(
            context,
            &format!("{block}.{field}"),
            Some(value),
            Duration::ZERO,
        )?;
        if parsed.is_zero() {
            return self.fail(
                value.referenced,
                format!("{context}`{block}.{field}` must be longer than 0s"),
            );
        }
        Some(parsed)
    }

    /// The field name at `block.field`, required and not empty.
    fn field_name(
        &mut self,
        context: &str,
        block: &str,
        value: Option<Spanned<String>>,
        block_location: Location,
    ) -> Option<LogField> {
        match value {
            None => self.fail(
                block_location,
                format!("{context}`{block}.field` is required (a field such as `user.name`)"),
            ),
            Some(field) if field.value.trim().is_empty() => self.fail(
                field.referenced,
                format!("{context}`{block}.field` must not be empty"),
            ),
            Some(field) => Some(LogField::from_name(&field.value)),
        }
    }

    fn threshold_trigger(
        &mut self,
        context: &str,
        name: &str,
        location: Location,
        threshold: Option<Spanned<RawThreshold>>,
    ) -> Option<LogTrigger> {
        let threshold_location = threshold.as_ref().map_or(location, |t| t.referenced);
        let (count, window) = match threshold {
            Some(threshold) => (threshold.value.count, threshold.value.window),
            None => (None, None),
        };
        let default_window = (name == "any").then_some(DEFAULT_ANY_WINDOW);
        if name == "frequency" && (count.is_none() || window.is_none()) {
            return self.fail(
                threshold_location,
                format!(
                    "{context}type `frequency` needs `threshold: {{count: N, window: DURATION}}`"
                ),
            );
        }
        if name == "flatline" && window.is_none() {
            return self.fail(
                threshold_location,
                format!(
                    "{context}type `flatline` needs `threshold: {{window: DURATION}}` (and \
                     optionally `count`, 1 by default)"
                ),
            );
        }
        let window = self.window_field(
            context,
            "threshold",
            "window",
            window.as_ref(),
            threshold_location,
            default_window,
        )?;
        match name {
            "any" => {
                if let Some(count) = count.as_ref().filter(|count| count.value != 1) {
                    return self.fail(
                        count.referenced,
                        format!(
                            "{context}type `any` fires on one line; set only `threshold.window`, \
                             or use type `frequency`"
                        ),
                    );
                }
                Some(LogTrigger::Any { window })
            }
            _ => {
                if let Some(count) = count.as_ref().filter(|count| count.value == 0) {
                    return self.fail(
                        count.referenced,
                        format!("{context}`threshold.count` must be at least 1"),
                    );
                }
                let count = count.map_or(1, |c| c.value);
                if name == "flatline" {
                    Some(LogTrigger::Flatline { count, window })
                } else {
                    Some(LogTrigger::Frequency { count, window })
                }
            }
        }
    }

    fn spike_trigger(
        &mut self,
        context: &str,
        location: Location,
        spike: Option<Spanned<RawSpike>>,
    ) -> Option<LogTrigger> {
        let Some(spike) = spike else {
            return self.fail(
                location,
                format!(
                    "{context}type `spike` needs `spike: {{window: DURATION, baseline: DURATION, \
                     ratio: N, min_count: N}}`"
                ),
            );
        };
        let block_location = spike.referenced;
        let raw = spike.value;
        let window = self.window_field(
            context,
            "spike",
            "window",
            raw.window.as_ref(),
            block_location,
            None,
        );
        let baseline = self.window_field(
            context,
            "spike",
            "baseline",
            raw.baseline.as_ref(),
            block_location,
            None,
        );
        let ratio = match raw.ratio {
            None => self.fail(
                block_location,
                format!("{context}`spike.ratio` is required (how many times the baseline rate)"),
            ),
            Some(ratio) if !(ratio.value.is_finite() && ratio.value > 1.0) => self.fail(
                ratio.referenced,
                format!(
                    "{context}`spike.ratio` must be a number greater than 1, not {}",
                    ratio.value
                ),
            ),
            Some(ratio) => Some(ratio.value),
        };
        let min_count = match raw.min_count {
            Some(min_count) if min_count.value == 0 => self.fail(
                min_count.referenced,
                format!("{context}`spike.min_count` must be at least 1"),
            ),
            min_count => Some(min_count.map_or(1, |m| m.value)),
        };
        Some(LogTrigger::Spike {
            window: window?,
            baseline: baseline?,
            ratio: ratio?,
            min_count: min_count?,
        })
    }

    fn new_value_trigger(
        &mut self,
        context: &str,
        location: Location,
        new_value: Option<Spanned<RawNewValue>>,
    ) -> Option<LogTrigger> {
        let Some(new_value) = new_value else {
            return self.fail(
                location,
                format!(
                    "{context}type `new_value` needs `new_value: {{field: NAME, lookback: \
                     DURATION}}`"
                ),
            );
        };
        let block_location = new_value.referenced;
        let raw = new_value.value;
        let field = self.field_name(context, "new_value", raw.field, block_location);
        let lookback = self.window_field(
            context,
            "new_value",
            "lookback",
            raw.lookback.as_ref(),
            block_location,
            None,
        );
        let window = self.window_field(
            context,
            "new_value",
            "window",
            raw.window.as_ref(),
            block_location,
            Some(DEFAULT_ANY_WINDOW),
        );
        let learn = match &raw.learn {
            None => lookback,
            Some(learn) => self.duration(context, "new_value.learn", Some(learn), Duration::ZERO),
        };
        Some(LogTrigger::NewValue {
            field: field?,
            lookback: lookback?,
            window: window?,
            learn: learn?,
        })
    }

    fn cardinality_trigger(
        &mut self,
        context: &str,
        location: Location,
        cardinality: Option<Spanned<RawCardinality>>,
    ) -> Option<LogTrigger> {
        let Some(cardinality) = cardinality else {
            return self.fail(
                location,
                format!(
                    "{context}type `cardinality` needs `cardinality: {{field: NAME, max: N, \
                     window: DURATION}}`"
                ),
            );
        };
        let block_location = cardinality.referenced;
        let raw = cardinality.value;
        let field = self.field_name(context, "cardinality", raw.field, block_location);
        let window = self.window_field(
            context,
            "cardinality",
            "window",
            raw.window.as_ref(),
            block_location,
            None,
        );
        let max = match raw.max {
            None => self.fail(
                block_location,
                format!(
                    "{context}`cardinality.max` is required (most distinct values that do not fire)"
                ),
            ),
            Some(max) if max.value >= MAX_REMEMBERED_VALUES as u64 => self.fail(
                max.referenced,
                format!(
                    "{context}`cardinality.max` must be below {MAX_REMEMBERED_VALUES}, the most \
                     values remembered per key"
                ),
            ),
            Some(max) => Some(max.value),
        };
        Some(LogTrigger::Cardinality {
            field: field?,
            max: max?,
            window: window?,
        })
    }
}
