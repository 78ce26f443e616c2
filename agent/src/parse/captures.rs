//! The `regex` step: the named captures of the first pattern that matches become
//! fields, named as the capture (`(?P<source.ip>\S+)`: capture names may hold
//! dots, so a pattern names ECS fields directly).

use super::fields::Fields;
use regex::Regex;

/// One pattern, with the fields a match of it sets besides its captures.
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    regex: Regex,
    set: Vec<(String, String)>,
}

impl Pattern {
    /// Compiles `pattern`; the error is the regex crate's reason.
    pub(crate) fn new(pattern: &str) -> Result<Self, String> {
        let regex =
            Regex::new(pattern).map_err(|error| format!("is not a valid regex: {error}"))?;
        if regex.capture_names().flatten().next().is_none() {
            return Err(
                "has no named capture (`(?P<name>...)`), so it would give no field".to_owned(),
            );
        }
        Ok(Self {
            regex,
            set: Vec::new(),
        })
    }

    /// A pattern of a preset, which its tests prove valid.
    pub(crate) fn preset(pattern: &str, set: &[(&str, &str)]) -> Self {
        Self {
            regex: Regex::new(pattern).unwrap_or_else(|error| {
                unreachable!("preset patterns are tested to compile: {error}")
            }),
            set: set
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
        }
    }
}

/// Patterns tried in order.
#[derive(Debug, Clone)]
pub(crate) struct RegexParser {
    patterns: Vec<Pattern>,
    /// A line no pattern matches is a parse failure.
    required: bool,
}

impl RegexParser {
    pub(crate) fn required(patterns: Vec<Pattern>) -> Self {
        Self {
            patterns,
            required: true,
        }
    }

    pub(crate) fn optional(patterns: Vec<Pattern>) -> Self {
        Self {
            patterns,
            required: false,
        }
    }

    pub(crate) fn with_required(mut self, required: bool) -> Self {
        self.required = required;
        self
    }

    /// Adds the captures of the first matching pattern to `fields`.
    pub(crate) fn parse(&self, text: &str, fields: &mut Fields) -> Result<(), String> {
        for pattern in &self.patterns {
            let Some(captures) = pattern.regex.captures(text) else {
                continue;
            };
            for (name, value) in pattern
                .regex
                .capture_names()
                .zip(captures.iter())
                .filter_map(|(name, value)| Some((name?, value?.as_str())))
            {
                if !value.is_empty() && value != "-" {
                    fields.add(name, value);
                }
            }
            for (name, value) in &pattern.set {
                fields.add_verbatim(name, value);
            }
            return Ok(());
        }
        if self.required {
            Err("no pattern matches".to_owned())
        } else {
            Ok(())
        }
    }
}
