//! Label matchers in Alertmanager notation (`severity="page"`, `host=~"web-.*"`),
//! as routes, inhibition rules and silences select alerts on their way from the
//! alert stage to the receivers.
//!
//! Rules write matchers as a map (`match: {host: "=~web-.*"}`); routes and silences
//! use Alertmanager's list of `name op value` strings instead, so an SRE can paste
//! them from an Alertmanager configuration or `amtool` command line.

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;
use vigil_proto::labels::find;
use vigil_proto::v1::Label;

/// One condition on one label. A missing label reads as empty, as in Alertmanager.
#[derive(Debug, Clone)]
pub struct Matcher {
    name: String,
    value: String,
    test: Test,
}

#[derive(Debug, Clone)]
enum Test {
    Equal,
    NotEqual,
    /// Anchored at both ends, as in Alertmanager.
    Matches(Regex),
    NotMatches(Regex),
}

/// Why a text is not a matcher.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid matcher `{text}`: {reason}")]
pub struct MatcherError {
    text: String,
    reason: String,
}

impl Matcher {
    /// Whether the labels satisfy this condition.
    pub fn matches(&self, labels: &[Label]) -> bool {
        self.matches_value(find(labels, &self.name).unwrap_or_default())
    }

    /// Whether a label value satisfies this condition.
    pub fn matches_value(&self, value: &str) -> bool {
        match &self.test {
            Test::Equal => value == self.value,
            Test::NotEqual => value != self.value,
            Test::Matches(regex) => regex.is_match(value),
            Test::NotMatches(regex) => !regex.is_match(value),
        }
    }

    /// The label this matcher looks at.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Whether every matcher holds (an empty list matches everything).
pub(crate) fn all_match(matchers: &[Matcher], labels: &[Label]) -> bool {
    matchers.iter().all(|matcher| matcher.matches(labels))
}

impl FromStr for Matcher {
    type Err = MatcherError;

    /// `name=value`, `name!=value`, `name=~regex`, `name!~regex`; the value may be
    /// a double-quoted string with JSON escapes.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = |reason: &str| MatcherError {
            text: text.to_owned(),
            reason: reason.to_owned(),
        };
        let operator_at = text
            .find(['=', '!'])
            .ok_or_else(|| error("expected `=`, `!=`, `=~` or `!~` after the label name"))?;
        let name = text[..operator_at].trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Err(error(
                "the label name must be letters, digits, `_`, `.` or `-`",
            ));
        }
        let rest = &text[operator_at..];
        let (operator, quoted) = ["=~", "!~", "!=", "="]
            .into_iter()
            .find_map(|operator| rest.strip_prefix(operator).map(|value| (operator, value)))
            .ok_or_else(|| error("expected `=`, `!=`, `=~` or `!~` after the label name"))?;
        let quoted = quoted.trim();
        let value = if quoted.starts_with('"') {
            serde_json::from_str::<String>(quoted)
                .map_err(|_| error("the quoted value is not a complete string"))?
        } else {
            quoted.to_owned()
        };
        let regex = |value: &str| {
            Regex::new(&format!("^(?:{value})$"))
                .map_err(|reason| error(&format!("invalid regex: {reason}")))
        };
        let test = match operator {
            "=" => Test::Equal,
            "!=" => Test::NotEqual,
            "=~" => Test::Matches(regex(&value)?),
            _ => Test::NotMatches(regex(&value)?),
        };
        Ok(Self {
            name: name.to_owned(),
            value,
            test,
        })
    }
}

/// The canonical notation, with the value quoted: `host=~"web-.*"`.
impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let operator = match self.test {
            Test::Equal => "=",
            Test::NotEqual => "!=",
            Test::Matches(_) => "=~",
            Test::NotMatches(_) => "!~",
        };
        let value = serde_json::to_string(&self.value).map_err(|_| fmt::Error)?;
        write!(f, "{}{operator}{value}", self.name)
    }
}

impl<'de> Deserialize<'de> for Matcher {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Matcher {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::labels::label;

    fn matcher(text: &str) -> Matcher {
        text.parse().unwrap()
    }

    #[test]
    fn the_four_operators_with_quoted_and_bare_values() {
        let labels = [label("alertname", "HostDown"), label("host", "web-12")];
        assert!(matcher("alertname=HostDown").matches(&labels));
        assert!(matcher(r#"alertname="HostDown""#).matches(&labels));
        assert!(!matcher("alertname!=HostDown").matches(&labels));
        assert!(matcher("host=~web.*").matches(&labels));
        assert!(matcher(r#"host =~ "web-\\d+""#).matches(&labels));
        assert!(
            !matcher("host=~web").matches(&labels),
            "regexes are anchored"
        );
        assert!(matcher("host!~db.*").matches(&labels));
        assert!(
            matcher(r#"severity="""#).matches(&labels),
            "missing reads as empty"
        );
        assert!(matcher("severity!=page").matches(&labels));
    }

    #[test]
    fn display_is_canonical_and_parses_back() {
        for (text, canonical) in [
            ("host=~web.*", r#"host=~"web.*""#),
            ("alertname = HostDown", r#"alertname="HostDown""#),
            (r#"msg!="say \"hi\"""#, r#"msg!="say \"hi\"""#),
            ("dc!~eu-.*", r#"dc!~"eu-.*""#),
        ] {
            assert_eq!(matcher(text).to_string(), canonical);
            assert_eq!(matcher(canonical).to_string(), canonical);
        }
    }

    #[test]
    fn malformed_matchers_say_what_is_wrong() {
        let message = |text: &str| text.parse::<Matcher>().unwrap_err().to_string();
        assert_eq!(
            message("HostDown"),
            "invalid matcher `HostDown`: expected `=`, `!=`, `=~` or `!~` after the label name"
        );
        assert_eq!(
            message("=x"),
            "invalid matcher `=x`: the label name must be letters, digits, `_`, `.` or `-`"
        );
        assert_eq!(
            message(r#"a="open"#),
            r#"invalid matcher `a="open`: the quoted value is not a complete string"#
        );
        assert!(message("a=~(").starts_with("invalid matcher `a=~(`: invalid regex: "));
    }
}
