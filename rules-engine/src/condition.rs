//! Metric rule conditions: `value > 4`, `avg(5m) >= 0.9`, `rate(5m) > 1e9 / 8`,
//! `quantile(0.95, 5m) > 0.25`, `absent(3m)`.
//!
//! The left side is the latest value of a series or a function over the series'
//! samples in a window ending at the evaluation time; the right side is a constant,
//! written with `+ - * /` and parentheses where that reads better
//! (`256 * 1024 * 1024`). `absent(d)` stands alone: it holds for a series that
//! has had no sample for `d`. Parsed when rules load, evaluated by the alert stage.

use super::lexer::{Cursor, SyntaxError, Token};
use std::fmt;
use std::time::Duration;
use vigil_config::duration::{format_duration, parse_duration};

/// A parsed condition of a metric rule.
#[derive(Debug, Clone)]
pub struct Condition {
    pub(crate) subject: Subject,
    pub(crate) comparison: Comparison,
    pub(crate) threshold: f64,
    /// The condition as written, for display.
    text: String,
}

/// What is compared against the threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Subject {
    /// The latest sample of the series.
    Value,
    /// A function of the samples in `(now - window, now]`.
    Window(WindowFunction, Duration),
    /// Seconds since the series' last sample, which must reach the duration, as
    /// Prometheus' `absent_over_time`. A series that stops reporting is kept
    /// (instead of going stale) so that it fires, and resolves when samples come
    /// back; a rule that has seen no series at all fires once, with the labels of
    /// its `match` equalities, as Prometheus' `absent()`.
    Absent(Duration),
}

/// Functions over the samples of one series in a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum WindowFunction {
    Avg,
    Min,
    Max,
    Sum,
    Count,
    Last,
    /// Per-second increase of a counter between the first and the last sample in
    /// the window; a decrease counts as a counter reset.
    Rate,
    /// Increase of a counter between the first and the last sample in the window.
    Increase,
    /// Last minus first sample in the window, for gauges (may be negative).
    Delta,
    /// Per-second slope of the least-squares line through the samples, as
    /// Prometheus' `deriv`, for gauges.
    Deriv,
    /// The φ-quantile (0 to 1) of the samples, interpolated between the two
    /// nearest ranks, as Prometheus' `quantile_over_time`: `quantile(0.95, 5m)`.
    Quantile(f64),
}

/// Functions of one argument, the window.
const FUNCTIONS: [(&str, WindowFunction); 10] = [
    ("avg", WindowFunction::Avg),
    ("min", WindowFunction::Min),
    ("max", WindowFunction::Max),
    ("sum", WindowFunction::Sum),
    ("count", WindowFunction::Count),
    ("last", WindowFunction::Last),
    ("rate", WindowFunction::Rate),
    ("increase", WindowFunction::Increase),
    ("delta", WindowFunction::Delta),
    ("deriv", WindowFunction::Deriv),
];

/// Every function name, for error messages.
const FUNCTION_NAMES: &str =
    "avg, min, max, sum, count, last, rate, increase, delta, deriv, quantile or absent";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Comparison {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

const COMPARISONS: [(&str, Comparison); 6] = [
    (">", Comparison::Gt),
    (">=", Comparison::Ge),
    ("<", Comparison::Lt),
    ("<=", Comparison::Le),
    ("==", Comparison::Eq),
    ("!=", Comparison::Ne),
];

impl Comparison {
    pub(crate) fn holds(self, left: f64, right: f64) -> bool {
        match self {
            Comparison::Gt => left > right,
            Comparison::Ge => left >= right,
            Comparison::Lt => left < right,
            Comparison::Le => left <= right,
            Comparison::Eq => left == right,
            Comparison::Ne => left != right,
        }
    }
}

impl Condition {
    /// Parses a condition; the error says what is wrong and quotes the text from
    /// where it is wrong.
    pub(crate) fn parse(text: &str) -> Result<Condition, String> {
        Self::parse_tokens(text).map_err(|error| error.describe(text))
    }

    fn parse_tokens(text: &str) -> Result<Condition, SyntaxError> {
        let mut cursor = Cursor::new(text)?;
        let subject = match cursor.next() {
            Some(Token::Word(word)) if word == "value" => Subject::Value,
            Some(Token::Word(word)) => {
                let function = FUNCTIONS.iter().find(|(name, _)| *name == word);
                if function.is_none() && word != "quantile" && word != "absent" {
                    return Err(cursor.error_before(format!(
                        "unknown function `{word}` (expected `value` or one of {FUNCTION_NAMES})"
                    )));
                }
                if !cursor.eat("(") {
                    return Err(cursor.error(format!("expected `(` after `{word}`")));
                }
                let quantile = if word == "quantile" {
                    Some(quantile_argument(&mut cursor)?)
                } else {
                    None
                };
                let window = window_argument(&mut cursor)?;
                match (function, quantile) {
                    (Some((_, function)), _) => Subject::Window(*function, window),
                    (None, Some(phi)) => Subject::Window(WindowFunction::Quantile(phi), window),
                    (None, None) => {
                        if !cursor.is_done() {
                            return Err(cursor.error(
                                "`absent(DURATION)` is the whole condition: nothing compares it",
                            ));
                        }
                        return Ok(Condition {
                            subject: Subject::Absent(window),
                            comparison: Comparison::Ge,
                            threshold: window.as_secs_f64(),
                            text: text.trim().to_owned(),
                        });
                    }
                }
            }
            _ => {
                return Err(cursor.error_before("expected `value` or a function such as `avg(5m)`"));
            }
        };
        let comparison = match cursor.next() {
            Some(Token::Op(op)) if COMPARISONS.iter().any(|(name, _)| *name == op) => COMPARISONS
                .iter()
                .find(|(name, _)| *name == op)
                .map(|(_, c)| *c),
            _ => None,
        }
        .ok_or_else(|| cursor.error_before("expected one of > >= < <= == !="))?;
        let threshold = sum(&mut cursor)?;
        if !cursor.is_done() {
            return Err(cursor.error("unexpected text after the condition"));
        }
        if !threshold.is_finite() {
            return Err(SyntaxError {
                offset: 0,
                message: "the threshold is not a finite number".to_owned(),
            });
        }
        Ok(Condition {
            subject,
            comparison,
            threshold,
            text: text.trim().to_owned(),
        })
    }

    /// Whether this is `absent(d)`.
    pub(crate) fn is_absent(&self) -> bool {
        matches!(self.subject, Subject::Absent(_))
    }

    /// The longest window the condition looks back over, zero for `value`; for
    /// `absent`, the silence it waits for.
    pub(crate) fn window(&self) -> Duration {
        match self.subject {
            Subject::Value => Duration::ZERO,
            Subject::Window(_, window) | Subject::Absent(window) => window,
        }
    }

    /// The condition in canonical form, with the threshold computed:
    /// `avg(5m) > 268435456`.
    pub fn canonical(&self) -> String {
        let subject = match self.subject {
            Subject::Value => "value".to_owned(),
            Subject::Absent(window) => return format!("absent({})", format_duration(window)),
            Subject::Window(WindowFunction::Quantile(phi), window) => {
                format!("quantile({phi}, {})", format_duration(window))
            }
            Subject::Window(function, window) => {
                let name = FUNCTIONS
                    .iter()
                    .find(|(_, f)| *f == function)
                    .map_or("?", |(name, _)| name);
                format!("{name}({})", format_duration(window))
            }
        };
        let op = COMPARISONS
            .iter()
            .find(|(_, c)| *c == self.comparison)
            .map_or("?", |(name, _)| name);
        format!("{subject} {op} {}", self.threshold)
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The φ of `quantile(φ, window)` and the comma after it.
fn quantile_argument(cursor: &mut Cursor) -> Result<f64, SyntaxError> {
    let phi = match cursor.next() {
        Some(Token::Number(text)) => text.parse::<f64>().ok(),
        _ => None,
    }
    .ok_or_else(|| cursor.error_before("expected a quantile between 0 and 1, such as `0.95`"))?;
    if !(0.0..=1.0).contains(&phi) {
        return Err(cursor.error_before("the quantile must be between 0 and 1"));
    }
    if !cursor.eat(",") {
        return Err(cursor.error("expected `,` after the quantile"));
    }
    Ok(phi)
}

/// The window of a function, a duration longer than zero, and the `)` after it.
fn window_argument(cursor: &mut Cursor) -> Result<Duration, SyntaxError> {
    let window = match cursor.next() {
        Some(Token::Number(text)) => {
            parse_duration(&text).map_err(|error| cursor.error_before(error.to_string()))?
        }
        _ => return Err(cursor.error_before("expected a window such as `5m`")),
    };
    if window.is_zero() {
        return Err(cursor.error_before("the window must be longer than 0s"));
    }
    if !cursor.eat(")") {
        return Err(cursor.error("expected `)` after the window"));
    }
    Ok(window)
}

/// `product (('+' | '-') product)*`
fn sum(cursor: &mut Cursor) -> Result<f64, SyntaxError> {
    let mut value = product(cursor)?;
    loop {
        if cursor.eat("+") {
            value += product(cursor)?;
        } else if cursor.eat("-") {
            value -= product(cursor)?;
        } else {
            return Ok(value);
        }
    }
}

/// `unary (('*' | '/') unary)*`
fn product(cursor: &mut Cursor) -> Result<f64, SyntaxError> {
    let mut value = unary(cursor)?;
    loop {
        if cursor.eat("*") {
            value *= unary(cursor)?;
        } else if cursor.eat("/") {
            let divisor = unary(cursor)?;
            if divisor == 0.0 {
                return Err(cursor.error_before("division by zero"));
            }
            value /= divisor;
        } else {
            return Ok(value);
        }
    }
}

/// `'-' unary | number | '(' sum ')'`
fn unary(cursor: &mut Cursor) -> Result<f64, SyntaxError> {
    if cursor.eat("-") {
        return Ok(-unary(cursor)?);
    }
    if cursor.eat("(") {
        let value = sum(cursor)?;
        if !cursor.eat(")") {
            return Err(cursor.error("expected `)`"));
        }
        return Ok(value);
    }
    match cursor.next() {
        Some(Token::Number(text)) => text
            .parse::<f64>()
            .map_err(|_| cursor.error_before(format!("`{text}` is not a number"))),
        Some(_) => Err(cursor.error_before("expected a number")),
        None => Err(cursor.error("expected a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_value_and_window_conditions() {
        let condition = Condition::parse("value >= 0").unwrap();
        assert_eq!(condition.subject, Subject::Value);
        assert_eq!(condition.comparison, Comparison::Ge);
        assert_eq!(condition.threshold, 0.0);

        let condition = Condition::parse("avg(5m) > 256 * 1024 * (2 - 1) / 2 + 1").unwrap();
        assert_eq!(
            condition.subject,
            Subject::Window(WindowFunction::Avg, Duration::from_secs(300))
        );
        assert_eq!(condition.threshold, 131_073.0);
        assert_eq!(condition.window(), Duration::from_secs(300));
        assert_eq!(condition.canonical(), "avg(5m) > 131073");
        assert_eq!(
            condition.to_string(),
            "avg(5m) > 256 * 1024 * (2 - 1) / 2 + 1"
        );

        let condition = Condition::parse("rate(1h30m) != -9.5e-3").unwrap();
        assert_eq!(
            condition.subject,
            Subject::Window(WindowFunction::Rate, Duration::from_secs(5400))
        );
        assert_eq!(condition.comparison, Comparison::Ne);
        assert_eq!(condition.threshold, -0.0095);
        let condition = Condition::parse("quantile(0.95, 10m) > 0.25").unwrap();
        assert_eq!(
            condition.subject,
            Subject::Window(WindowFunction::Quantile(0.95), Duration::from_secs(600))
        );
        assert_eq!(condition.canonical(), "quantile(0.95, 10m) > 0.25");
        let condition = Condition::parse("absent(3m)").unwrap();
        assert_eq!(condition.subject, Subject::Absent(Duration::from_secs(180)));
        assert_eq!(condition.canonical(), "absent(3m)");
        assert_eq!(condition.window(), Duration::from_secs(180));
        assert_eq!(condition.to_string(), "absent(3m)");
        for (name, function) in FUNCTIONS {
            let parsed = Condition::parse(&format!("{name}(1m) < 1")).unwrap();
            assert_eq!(
                parsed.subject,
                Subject::Window(function, Duration::from_secs(60))
            );
        }
    }

    #[test]
    fn errors_name_the_bad_text() {
        let error = |text| Condition::parse(text).unwrap_err();
        assert_eq!(
            error("median(5m) > 1"),
            "unknown function `median` (expected `value` or one of avg, min, max, sum, count, \
             last, rate, increase, delta, deriv, quantile or absent) at `median(5m) > 1`"
        );
        assert_eq!(
            error("quantile(95, 5m) > 1"),
            "the quantile must be between 0 and 1 at `95, 5m) > 1`"
        );
        assert_eq!(
            error("quantile(5m) > 1"),
            "expected a quantile between 0 and 1, such as `0.95` at `5m) > 1`"
        );
        assert_eq!(
            error("quantile(0.5 5m) > 1"),
            "expected `,` after the quantile at `5m) > 1`"
        );
        assert_eq!(
            error("absent(5m) > 1"),
            "`absent(DURATION)` is the whole condition: nothing compares it at `> 1`"
        );
        assert_eq!(error("avg 5m > 1"), "expected `(` after `avg` at `5m > 1`");
        assert_eq!(
            error("avg(5) > 1"),
            "invalid duration `5`: missing unit (ms, s, m, h, d, w) at `5) > 1`"
        );
        assert_eq!(
            error("avg(0s) > 1"),
            "the window must be longer than 0s at `0s) > 1`"
        );
        assert_eq!(error("value >> 1"), "expected a number at `> 1`");
        assert_eq!(error("value = 1"), "unexpected character `=` at `= 1`");
        assert_eq!(error("value > "), "expected a number at the end");
        assert_eq!(
            error("value > 1 2"),
            "unexpected text after the condition at `2`"
        );
        assert_eq!(error("value > 1 / 0"), "division by zero at `0`");
        assert_eq!(
            error("value > 1e999"),
            "the threshold is not a finite number at `value > 1e999`"
        );
        assert_eq!(error("value > 1x"), "`1x` is not a number at `1x`");
        assert_eq!(error("value"), "expected one of > >= < <= == != at `value`");
        assert_eq!(
            error("> 1"),
            "expected `value` or a function such as `avg(5m)` at `> 1`"
        );
    }

    #[test]
    fn comparisons_compare() {
        assert!(Comparison::Gt.holds(2.0, 1.0) && !Comparison::Gt.holds(1.0, 1.0));
        assert!(Comparison::Ge.holds(1.0, 1.0) && !Comparison::Ge.holds(0.0, 1.0));
        assert!(Comparison::Lt.holds(0.0, 1.0) && !Comparison::Lt.holds(1.0, 1.0));
        assert!(Comparison::Le.holds(1.0, 1.0) && !Comparison::Le.holds(2.0, 1.0));
        assert!(Comparison::Eq.holds(1.0, 1.0) && !Comparison::Eq.holds(2.0, 1.0));
        assert!(Comparison::Ne.holds(2.0, 1.0) && !Comparison::Ne.holds(1.0, 1.0));
    }
}
