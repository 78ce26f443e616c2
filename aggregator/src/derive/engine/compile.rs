//! Compiling the derive engine's definitions, before any batch flows: each
//! definition becomes a step over interned metric names, and aggregates get
//! their per-series or group windows.

use super::Engine;
use super::windows::{GroupWindows, SeriesWindows};
use crate::derive::definitions::{Definition, Function, Operand};
use crate::derive::window::TumblingWindows;
use xxhash_rust::xxh3::xxh3_64;

/// Interned metric name: an input, an output, or `rate(name)`.
pub(super) type NameId = u32;

/// One compiled definition.
#[derive(Debug)]
pub(super) enum Step {
    Rate {
        rate_of_input: NameId,
        output: NameId,
        scale: f64,
    },
    Ratio {
        numerator: NameId,
        denominator: NameId,
        output: NameId,
        complement: bool,
        scale: f64,
    },
    Share {
        rate_of_input: NameId,
        output: NameId,
        label: String,
        values: Vec<String>,
        complement: bool,
        scale: f64,
    },
    Aggregate {
        input: NameId,
        /// Indexes into `Engine::series_windows` or `Engine::group_windows`.
        windows: Vec<usize>,
        group_by: Vec<String>,
    },
}

/// A definition compiled against the interned names.
#[derive(Debug)]
pub(super) struct CompiledDefinition {
    pub(super) definition: Definition,
    pub(super) step: Step,
}

impl Engine {
    fn intern(&mut self, name: &str) -> NameId {
        let next = self.names.len() as NameId;
        *self.names.entry(xxh3_64(name.as_bytes())).or_insert(next)
    }

    fn intern_rate(&mut self, counter: &str) -> NameId {
        let counter_id = self.intern(counter);
        let rate_id = self.intern(&format!("rate({counter})"));
        self.rate_of.insert(counter_id, rate_id);
        rate_id
    }

    fn operand(&mut self, operand: &Operand) -> NameId {
        match operand {
            Operand::Value(name) => self.intern(name),
            Operand::Rate(name) => self.intern_rate(name),
        }
    }

    pub(super) fn compile(&mut self, position: usize, definition: &Definition) -> Step {
        let output = self.intern(&definition.name);
        match &definition.function {
            Function::Rate {
                input,
                scale,
                max_rate,
            } => {
                let rate_of_input = self.intern_rate(input);
                if let Some(bound) = max_rate {
                    let counter = self.intern(input);
                    let gauge = self.intern(&bound.metric);
                    self.rate_bounds
                        .entry(counter)
                        .or_insert((gauge, bound.factor));
                }
                Step::Rate {
                    rate_of_input,
                    output,
                    scale: *scale,
                }
            }
            Function::Ratio {
                numerator,
                denominator,
                complement,
                scale,
            } => Step::Ratio {
                numerator: self.operand(numerator),
                denominator: self.operand(denominator),
                output,
                complement: *complement,
                scale: *scale,
            },
            Function::Share {
                input,
                label,
                values,
                complement,
                scale,
            } => Step::Share {
                rate_of_input: self.intern_rate(input),
                output,
                label: label.clone(),
                values: values.clone(),
                complement: *complement,
                scale: *scale,
            },
            Function::Aggregate {
                aggregate,
                input,
                windows,
                group_by,
            } => {
                let input = self.intern(input);
                let lateness = self.settings.allowed_lateness;
                let indexes = windows
                    .iter()
                    .map(|width| {
                        let label = vigil_config::duration::format_duration(*width);
                        let windows =
                            TumblingWindows::new(*width, lateness, aggregate.needs_sketch());
                        if group_by.is_empty() {
                            self.series_windows.push(SeriesWindows {
                                definition: position,
                                aggregate: *aggregate,
                                label,
                                windows,
                            });
                            self.series_windows.len() - 1
                        } else {
                            self.group_windows.push(GroupWindows {
                                definition: position,
                                label,
                                windows: TumblingWindows::new(
                                    *width,
                                    lateness,
                                    aggregate.needs_sketch(),
                                ),
                            });
                            self.group_windows.len() - 1
                        }
                    })
                    .collect();
                Step::Aggregate {
                    input,
                    windows: indexes,
                    group_by: group_by.clone(),
                }
            }
        }
    }
}
