//! Validation after the YAML mapping: the error collector every part of `parse`
//! (and the rule-test and derived-metric readers) reports through, with each
//! problem's location, and the checks of fields several kinds of rule share:
//! durations, labels, annotations and label matchers.

use crate::error::RuleError;
use crate::log_filter::compile_regex;
use crate::model::{LabelMatcher, LabelTest};
use crate::template::Template;
use serde_saphyr::{Location, Spanned};
use std::collections::BTreeMap;
use std::time::Duration;
use vigil_config::duration::parse_duration;

/// Validation of one file's raw structs, collecting errors instead of stopping at
/// the first.
#[derive(Debug, Default)]
pub struct Checker {
    pub(crate) file: String,
    pub(crate) errors: Vec<RuleError>,
}

impl Checker {
    /// Locates the errors reported from now on in `file`.
    pub fn start_file(&mut self, file: &str) {
        file.clone_into(&mut self.file);
    }

    /// Adds an error found elsewhere (a file that does not parse).
    pub fn report(&mut self, error: RuleError) {
        self.errors.push(error);
    }

    /// `value` if nothing was reported, otherwise every error.
    pub fn finish<T>(self, value: T) -> Result<T, Vec<RuleError>> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(self.errors)
        }
    }

    /// Reports `message` at `location`; `None`, for the value that is not built.
    pub fn fail<T>(&mut self, location: Location, message: impl Into<String>) -> Option<T> {
        self.errors
            .push(RuleError::at(&self.file, location, message));
        None
    }

    /// A duration field, or `default` when absent.
    pub fn duration(
        &mut self,
        context: &str,
        field: &str,
        value: Option<&Spanned<String>>,
        default: Duration,
    ) -> Option<Duration> {
        match value {
            None => Some(default),
            Some(value) => match parse_duration(&value.value) {
                Ok(duration) => Some(duration),
                Err(error) => self.fail(value.referenced, format!("{context}`{field}`: {error}")),
            },
        }
    }

    pub(super) fn labels(
        &mut self,
        context: &str,
        raw: BTreeMap<String, Spanned<String>>,
    ) -> Option<BTreeMap<String, String>> {
        let mut labels = BTreeMap::new();
        let mut valid = true;
        for (name, value) in raw {
            if name == "alertname" {
                valid = false;
                self.fail::<()>(
                    value.referenced,
                    format!(
                        "{context}label `alertname` is set from `alert` and cannot be overridden"
                    ),
                );
            } else if !is_label_name(&name) {
                valid = false;
                self.fail::<()>(
                    value.referenced,
                    format!(
                        "{context}invalid label name `{name}` (letters, digits, `_` and `.`, \
                         not starting with a digit)"
                    ),
                );
            } else {
                labels.insert(name, value.value);
            }
        }
        valid.then_some(labels)
    }

    pub(super) fn annotations(
        &mut self,
        context: &str,
        raw: BTreeMap<String, Spanned<String>>,
    ) -> Option<BTreeMap<String, Template>> {
        let mut annotations = BTreeMap::new();
        let mut valid = true;
        for (name, value) in raw {
            match Template::parse(&value.value) {
                Ok(template) => {
                    annotations.insert(name, template);
                }
                Err(error) => {
                    valid = false;
                    self.fail::<()>(
                        value.referenced,
                        format!("{context}annotation `{name}`: {error}"),
                    );
                }
            }
        }
        valid.then_some(annotations)
    }

    /// Label conditions as written under `match:`: `value`, `"!=value"`,
    /// `"=~regex"`, `"!~regex"` (regexes anchored, as in Prometheus).
    pub fn label_matchers(
        &mut self,
        context: &str,
        matchers: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    ) -> Vec<LabelMatcher> {
        let mut parsed_matchers = Vec::new();
        for (name, value) in matchers.map(|m| m.value).unwrap_or_default() {
            let text = value.value.as_str();
            let (test, regex_text) = if let Some(pattern) = text.strip_prefix("=~") {
                (None, Some((pattern, true)))
            } else if let Some(pattern) = text.strip_prefix("!~") {
                (None, Some((pattern, false)))
            } else if let Some(other) = text.strip_prefix("!=") {
                (Some(LabelTest::NotEqual(other.to_owned())), None)
            } else {
                (Some(LabelTest::Equal(text.to_owned())), None)
            };
            let test = match (test, regex_text) {
                (Some(test), _) => test,
                (None, Some((pattern, positive))) => {
                    // Compiled alone first so the error talks about the regex as written.
                    if let Err(reason) = compile_regex(pattern) {
                        self.fail::<()>(
                            value.referenced,
                            format!("{context}invalid regex `{pattern}`: {reason}"),
                        );
                        continue;
                    }
                    let Ok(anchored) = compile_regex(&format!("^(?:{pattern})$")) else {
                        continue;
                    };
                    if positive {
                        LabelTest::Matches(anchored)
                    } else {
                        LabelTest::NotMatches(anchored)
                    }
                }
                (None, None) => continue,
            };
            parsed_matchers.push(LabelMatcher { name, test });
        }
        parsed_matchers
    }
}

pub(super) fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}
