//! Parser of the bodies scrape targets return: the Prometheus text exposition
//! format 0.0.4 and OpenMetrics 1.0 text, as the scrape source reads them before
//! turning samples into a metric batch.
//!
//! Written here rather than taken from a crate: the maintained parsers build a
//! `String` per name and label and a map per sample (or run a regex per line),
//! where a target of thousands of series scraped every 15 s wants names and
//! label values borrowed from the body; only a label value with an escape is
//! copied. Every refusal names the line and what is wrong with it.
//!
//! A sample's family comes from the `# TYPE` line whose name is the sample's name
//! or the sample's name less a suffix the type allows (`_total` and `_created`
//! for counters, `_bucket`, `_sum`, `_count` and `_created` for histograms,
//! `_sum`, `_count` and `_created` for summaries, `_gcount` and `_gsum` for gauge
//! histograms, `_info` for info); without one it is untyped. Exemplars
//! (OpenMetrics) are read past and dropped.

use std::borrow::Cow;
use std::collections::HashMap;

/// The format of a body, from the response's `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`: timestamps are integer milliseconds.
    Text,
    /// `application/openmetrics-text`: timestamps are float seconds, the body
    /// ends with `# EOF`.
    OpenMetrics,
}

impl Format {
    /// The format a `Content-Type` header names; the text format for anything
    /// else, as Prometheus falls back to it.
    pub fn of_content_type(content_type: &str) -> Format {
        if content_type
            .trim_start()
            .starts_with("application/openmetrics-text")
        {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }
}

/// The type of a metric family, from its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyType {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
    Untyped,
}

impl FamilyType {
    fn parse(word: &str) -> Option<FamilyType> {
        Some(match word {
            "counter" => FamilyType::Counter,
            "gauge" => FamilyType::Gauge,
            "histogram" => FamilyType::Histogram,
            "gaugehistogram" => FamilyType::GaugeHistogram,
            "summary" => FamilyType::Summary,
            "info" => FamilyType::Info,
            "stateset" => FamilyType::StateSet,
            "untyped" | "unknown" => FamilyType::Untyped,
            _ => return None,
        })
    }

    /// The suffixes a sample of a family of this type may add to its name.
    fn suffixes(self) -> &'static [&'static str] {
        match self {
            FamilyType::Counter => &["_total", "_created"],
            FamilyType::Histogram => &["_bucket", "_sum", "_count", "_created"],
            FamilyType::GaugeHistogram => &["_bucket", "_gsum", "_gcount"],
            FamilyType::Summary => &["_sum", "_count", "_created"],
            FamilyType::Info => &["_info"],
            FamilyType::Gauge | FamilyType::StateSet | FamilyType::Untyped => &[],
        }
    }
}

/// One sample of an exposition, borrowing from the body.
#[derive(Debug, Clone, PartialEq)]
pub struct ExposedSample<'a> {
    /// The sample's name as exposed (`http_requests_total`, `rpc_seconds_bucket`).
    pub name: &'a str,
    /// Labels in the order they were exposed; a value with escapes is unescaped.
    pub labels: Vec<(&'a str, Cow<'a, str>)>,
    pub value: f64,
    /// The sample's own time, in milliseconds since the Unix epoch, when exposed.
    pub timestamp_ms: Option<i64>,
    /// The type of its family.
    pub family: FamilyType,
    /// The suffix its name adds to its family's name (`""`, `_total`, `_bucket`, ...).
    pub suffix: &'a str,
}

impl ExposedSample<'_> {
    /// Whether the sample counts up, as Prometheus' `rate` reads it: a counter,
    /// and the buckets, count and sum of a histogram or summary (not `_created`,
    /// which is a time).
    pub fn is_counter(&self) -> bool {
        match self.family {
            FamilyType::Counter => self.suffix != "_created",
            FamilyType::Histogram | FamilyType::Summary => {
                matches!(self.suffix, "_bucket" | "_sum" | "_count")
            }
            _ => false,
        }
    }
}

/// Why a body could not be read: the line (counting from 1) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ExpositionError {
    pub line: usize,
    pub reason: String,
}

/// Parses `body` in `format`, handing each sample to `sample` in order. Stops at
/// the first malformed line (the scrape counts as failed, as in Prometheus), or
/// at the first error `sample` returns (a sample limit).
pub fn parse<'a, E>(
    body: &'a str,
    format: Format,
    mut sample: impl FnMut(ExposedSample<'a>) -> Result<(), E>,
) -> Result<(), ParseFailure<E>> {
    let mut types: HashMap<&'a str, FamilyType> = HashMap::new();
    let mut current: Option<(&'a str, FamilyType)> = None;
    let mut ended = false;
    for (index, line) in body.split('\n').enumerate() {
        let number = index + 1;
        let fail = |reason: String| {
            ParseFailure::Malformed(ExpositionError {
                line: number,
                reason,
            })
        };
        if ended {
            if line.is_empty() {
                continue;
            }
            return Err(fail("content after `# EOF`".into()));
        }
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, [' ', '\t']);
            match words.next() {
                Some("EOF") if format == Format::OpenMetrics => ended = true,
                Some("TYPE") => {
                    let name = words.next().unwrap_or("");
                    let word = words.next().unwrap_or("").trim();
                    check_name(name).map_err(|reason| fail(format!("TYPE: {reason}")))?;
                    let family = FamilyType::parse(word)
                        .ok_or_else(|| fail(format!("TYPE of `{name}`: unknown type `{word}`")))?;
                    types.insert(name, family);
                    current = Some((name, family));
                }
                _ => {}
            }
            continue;
        }
        let exposed =
            sample_line(line, format, |name| family_of(name, current, &types)).map_err(fail)?;
        sample(exposed).map_err(ParseFailure::Refused)?;
    }
    if format == Format::OpenMetrics && !ended {
        return Err(ParseFailure::Malformed(ExpositionError {
            line: body.split('\n').count(),
            reason: "no `# EOF` at the end of an OpenMetrics body".into(),
        }));
    }
    Ok(())
}

/// Why [`parse`] stopped.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseFailure<E> {
    #[error(transparent)]
    Malformed(ExpositionError),
    /// The sample callback refused a sample.
    #[error("{0}")]
    Refused(E),
}

/// The family of a sample named `name`, and the suffix its name adds: the family
/// typed last (samples of a family follow its `# TYPE`), then any typed before.
fn family_of<'a>(
    name: &'a str,
    current: Option<(&'a str, FamilyType)>,
    types: &HashMap<&'a str, FamilyType>,
) -> (FamilyType, &'a str) {
    let fits = |family: &str, family_type: FamilyType| {
        if name == family {
            return Some("");
        }
        let suffix = name.strip_prefix(family)?;
        family_type.suffixes().contains(&suffix).then_some(suffix)
    };
    if let Some((family, family_type)) = current
        && let Some(suffix) = fits(family, family_type)
    {
        return (family_type, &name[name.len() - suffix.len()..]);
    }
    if let Some(&family_type) = types.get(name) {
        return (family_type, "");
    }
    for position in name.match_indices('_').map(|(at, _)| at).rev() {
        let (family, suffix) = name.split_at(position);
        if let Some(&family_type) = types.get(family)
            && family_type.suffixes().contains(&suffix)
        {
            return (family_type, suffix);
        }
    }
    (FamilyType::Untyped, "")
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid_first = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if valid_first && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else if name.is_empty() {
        Err("no metric name".into())
    } else {
        Err(format!("invalid metric name `{}`", shorten(name)))
    }
}

/// At most 64 characters of `text`, for error messages about hostile input.
fn shorten(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(64) {
        Some((at, _)) => Cow::Owned(format!("{}…", &text[..at])),
        None => Cow::Borrowed(text),
    }
}

/// Reads one sample line: `name{labels} value [timestamp] [# exemplar]`.
fn sample_line<'a>(
    line: &'a str,
    format: Format,
    family: impl Fn(&'a str) -> (FamilyType, &'a str),
) -> Result<ExposedSample<'a>, String> {
    let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
    let name = &line[..name_end];
    check_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inside) = rest.strip_prefix('{') {
        rest = label_set(inside, &mut labels).map_err(|reason| format!("`{name}`: {reason}"))?;
    }
    let rest = rest.trim_start_matches([' ', '\t']);
    let rest = match rest.find(" #") {
        Some(exemplar) if format == Format::OpenMetrics => &rest[..exemplar],
        _ => rest,
    };
    let mut fields = rest.split([' ', '\t']).filter(|field| !field.is_empty());
    let value_text = fields
        .next()
        .ok_or_else(|| format!("`{name}` has no value"))?;
    let value = parse_value(value_text)
        .ok_or_else(|| format!("`{name}` has an invalid value `{}`", shorten(value_text)))?;
    let timestamp_ms = fields
        .next()
        .map(|text| {
            parse_timestamp(text, format)
                .ok_or_else(|| format!("`{name}` has an invalid timestamp `{}`", shorten(text)))
        })
        .transpose()?;
    if let Some(extra) = fields.next() {
        return Err(format!(
            "`{name}` has unexpected text `{}` after its value",
            shorten(extra)
        ));
    }
    let (family, suffix) = family(name);
    Ok(ExposedSample {
        name,
        labels,
        value,
        timestamp_ms,
        family,
        suffix,
    })
}

/// Reads the labels after `{` up to the closing `}`; returns what follows it.
fn label_set<'a>(
    mut rest: &'a str,
    labels: &mut Vec<(&'a str, Cow<'a, str>)>,
) -> Result<&'a str, String> {
    loop {
        rest = rest.trim_start_matches([' ', '\t']);
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .ok_or("unclosed label set")?;
        let label = &rest[..name_end];
        if label.is_empty() || label.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!("invalid label name at `{}`", shorten(rest)));
        }
        rest = rest[name_end..].trim_start_matches([' ', '\t']);
        rest = rest
            .strip_prefix('=')
            .ok_or_else(|| format!("label `{label}` has no `=`"))?;
        rest = rest.trim_start_matches([' ', '\t']);
        rest = rest
            .strip_prefix('"')
            .ok_or_else(|| format!("the value of label `{label}` is not quoted"))?;
        let (value, after) = quoted(rest).map_err(|reason| format!("label `{label}`: {reason}"))?;
        if labels.iter().any(|(seen, _)| *seen == label) {
            return Err(format!("label `{label}` appears twice"));
        }
        labels.push((label, value));
        rest = after.trim_start_matches([' ', '\t']);
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err(format!("expected `,` or `}}` after label `{label}`"));
        }
    }
}

/// Reads a label value after its opening quote, up to the closing one, with the
/// escapes `\\`, `\"` and `\n`; returns the value and what follows the quote.
fn quoted(text: &str) -> Result<(Cow<'_, str>, &str), String> {
    let end = text.find(['"', '\\']).ok_or("unterminated value")?;
    if text.as_bytes()[end] == b'"' {
        return Ok((Cow::Borrowed(&text[..end]), &text[end + 1..]));
    }
    let mut value = String::from(&text[..end]);
    let mut chars = text[end..].char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Ok((Cow::Owned(value), &text[end + at + 1..])),
            '\\' => match chars.next() {
                Some((_, '\\')) => value.push('\\'),
                Some((_, '"')) => value.push('"'),
                Some((_, 'n')) => value.push('\n'),
                Some((_, other)) => {
                    return Err(format!(
                        "invalid escape `\\{}` (only \\\\, \\\" and \\n)",
                        other.escape_debug()
                    ));
                }
                None => return Err("unterminated value".into()),
            },
            c => value.push(c),
        }
    }
    Err("unterminated value".into())
}

/// A sample value: a float, `NaN`, `+Inf` or `-Inf` (any case, as Go parses them).
fn parse_value(text: &str) -> Option<f64> {
    text.parse().ok()
}

/// A timestamp in milliseconds: integer milliseconds in the text format, float
/// seconds in OpenMetrics.
fn parse_timestamp(text: &str, format: Format) -> Option<i64> {
    match format {
        Format::Text => text.parse().ok(),
        Format::OpenMetrics => {
            let seconds: f64 = text.parse().ok()?;
            let millis = (seconds * 1000.0).round();
            (millis.is_finite() && millis.abs() < 9.2e18).then_some(millis as i64)
        }
    }
}

#[cfg(test)]
mod tests;
