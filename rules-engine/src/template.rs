//! Annotation templates: `"{{ $labels.host }} at {{ $value | humanize }}"`, in the
//! subset of Prometheus' template language that alert annotations use. Parsed when
//! rules load (so a typo is a load error, not a blank page at 3 a.m.), rendered
//! each time the alert stage emits an event.
//!
//! References: `.labels.NAME` or `$labels.NAME` (a label of the alert; empty when
//! absent; NAME may contain dots), `.value` or `$value` (the value that was
//! compared). Pipes: `humanize`, `humanize1024`, `humanizePercentage`,
//! `humanizeDuration` (seconds), as in Prometheus, and `urlquery` (Go's), which
//! escapes a label for a link, such as one to the Kibana view of the lines:
//!
//! ```yaml
//! logs: "https://kibana.example.net/app/discover#/?_a=(query:(language:kuery,query:'host.name:{{ $labels.host | urlquery }}'))"
//! ```

use std::fmt;
use vigil_proto::labels::find;
use vigil_proto::v1::Label;

/// A parsed annotation template.
#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
    /// The template as written, for display.
    source: String,
}

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Expression {
        reference: Reference,
        pipes: Vec<Pipe>,
    },
}

#[derive(Debug, Clone)]
enum Reference {
    Label(String),
    Value,
}

#[derive(Debug, Clone, Copy)]
enum Pipe {
    Humanize,
    Humanize1024,
    HumanizePercentage,
    HumanizeDuration,
    UrlQuery,
}

const PIPES: [(&str, Pipe); 5] = [
    ("humanize", Pipe::Humanize),
    ("humanize1024", Pipe::Humanize1024),
    ("humanizePercentage", Pipe::HumanizePercentage),
    ("humanizeDuration", Pipe::HumanizeDuration),
    ("urlquery", Pipe::UrlQuery),
];

impl Template {
    pub(crate) fn parse(source: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                return Err(format!("unclosed `{{{{` in `{source}`"));
            };
            parts.push(expression(&after[..end])?);
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template {
            parts,
            source: source.to_owned(),
        })
    }

    /// The text with references filled in from the alert's labels and value.
    pub(crate) fn render(&self, labels: &[Label], value: f64) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Expression { reference, pipes } => {
                    let mut text = match reference {
                        Reference::Label(name) => find(labels, name).unwrap_or("").to_owned(),
                        Reference::Value => value.to_string(),
                    };
                    for pipe in pipes {
                        text = apply(*pipe, &text);
                    }
                    out.push_str(&text);
                }
            }
        }
        out
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// The inside of `{{ ... }}`: a reference followed by `| pipe`s.
fn expression(inside: &str) -> Result<Part, String> {
    let mut pieces = inside.split('|').map(str::trim);
    let head = pieces.next().unwrap_or("");
    let reference = if head == ".value" || head == "$value" {
        Reference::Value
    } else if let Some(name) = head
        .strip_prefix(".labels.")
        .or_else(|| head.strip_prefix("$labels."))
        .filter(|name| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        })
    {
        Reference::Label(name.to_owned())
    } else {
        return Err(format!(
            "unknown template reference `{{{{{inside}}}}}` (expected .labels.NAME, \
             $labels.NAME, .value or $value)"
        ));
    };
    let pipes = pieces
        .map(|name| {
            PIPES
                .iter()
                .find(|(known, _)| *known == name)
                .map(|(_, pipe)| *pipe)
                .ok_or_else(|| {
                    format!(
                        "unknown template function `{name}` in `{{{{{inside}}}}}` (expected \
                         humanize, humanize1024, humanizePercentage, humanizeDuration or \
                         urlquery)"
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Part::Expression { reference, pipes })
}

/// Applies a pipe; text that is not a number passes through the humanize pipes
/// unchanged, as in Prometheus.
fn apply(pipe: Pipe, text: &str) -> String {
    let number = text.parse::<f64>().ok().filter(|value| value.is_finite());
    match (pipe, number) {
        (Pipe::UrlQuery, _) => url_query(text),
        (_, None) => text.to_owned(),
        (Pipe::Humanize, Some(value)) => humanize(value),
        (Pipe::Humanize1024, Some(value)) => humanize_1024(value),
        (Pipe::HumanizePercentage, Some(value)) => format!("{}%", significant(value * 100.0)),
        (Pipe::HumanizeDuration, Some(value)) => humanize_duration(value),
    }
}

/// Escapes text for a URL query, as Go's `urlquery`: unreserved characters stay,
/// a space becomes `+`, every other byte `%XX`.
fn url_query(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char);
            }
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// SI prefixes: `1.5k`, `2.346M`, `12m`.
fn humanize(value: f64) -> String {
    const BIG: [&str; 6] = ["k", "M", "G", "T", "P", "E"];
    const SMALL: [&str; 6] = ["m", "u", "n", "p", "f", "a"];
    let magnitude = value.abs();
    if magnitude >= 1000.0 {
        let mut scaled = value;
        let mut prefix = "";
        for unit in BIG {
            if scaled.abs() < 1000.0 {
                break;
            }
            scaled /= 1000.0;
            prefix = unit;
        }
        format!("{}{prefix}", significant(scaled))
    } else if magnitude != 0.0 && magnitude < 1.0 {
        let mut scaled = value;
        let mut prefix = "";
        for unit in SMALL {
            if scaled.abs() >= 1.0 {
                break;
            }
            scaled *= 1000.0;
            prefix = unit;
        }
        format!("{}{prefix}", significant(scaled))
    } else {
        significant(value)
    }
}

/// Binary prefixes: `1Ki`, `3.5Gi`.
fn humanize_1024(value: f64) -> String {
    const UNITS: [&str; 6] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    let mut scaled = value;
    let mut prefix = "";
    for unit in UNITS {
        if scaled.abs() < 1024.0 {
            break;
        }
        scaled /= 1024.0;
        prefix = unit;
    }
    format!("{}{prefix}", significant(scaled))
}

/// Seconds as Prometheus writes them: `1d 2h 3m 4s`, `1h 0m 15s`, `15.5s`, `500ms`.
fn humanize_duration(seconds: f64) -> String {
    if seconds == 0.0 {
        return "0s".to_owned();
    }
    let sign = if seconds < 0.0 { "-" } else { "" };
    let magnitude = seconds.abs();
    if magnitude < 1.0 {
        return format!("{sign}{}ms", significant(magnitude * 1000.0));
    }
    let whole = magnitude as u64;
    let (days, hours, minutes, secs) = (
        whole / 86_400,
        whole / 3600 % 24,
        whole / 60 % 60,
        whole % 60,
    );
    if days > 0 {
        format!("{sign}{days}d {hours}h {minutes}m {secs}s")
    } else if hours > 0 {
        format!("{sign}{hours}h {minutes}m {secs}s")
    } else if minutes > 0 {
        format!("{sign}{minutes}m {secs}s")
    } else {
        format!("{sign}{}s", significant(magnitude))
    }
}

/// Four significant digits without trailing zeros, like Go's `%.4g` for the
/// magnitudes the humanize functions produce.
fn significant(value: f64) -> String {
    if value == 0.0 {
        return "0".to_owned();
    }
    let digits_before_point = value.abs().log10().floor() as i32 + 1;
    let decimals = (4 - digits_before_point).max(0) as usize;
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::labels::label;

    fn render(source: &str, value: f64) -> String {
        let labels = [label("host", "web-1"), label("log.file.path", "/var/log/x")];
        Template::parse(source).unwrap().render(&labels, value)
    }

    #[test]
    fn fills_in_labels_and_value() {
        assert_eq!(
            render("{{ .labels.host }} at {{ $value }} ({{$labels.host}})", 4.5),
            "web-1 at 4.5 (web-1)"
        );
        assert_eq!(
            render("{{ .value }} lines in {{ $labels.log.file.path }}", 3.0),
            "3 lines in /var/log/x"
        );
        assert_eq!(render("missing: [{{ .labels.nope }}]", 0.0), "missing: []");
        assert_eq!(render("no references", 0.0), "no references");
    }

    #[test]
    fn pipes_humanize_like_prometheus() {
        assert_eq!(render("{{ $value | humanize }}", 1234.0), "1.234k");
        assert_eq!(render("{{ $value | humanize }}", 2_500_000.0), "2.5M");
        assert_eq!(render("{{ $value | humanize }}", 0.012), "12m");
        assert_eq!(render("{{ $value | humanize }}", 42.0), "42");
        assert_eq!(
            render("{{ $value | humanize1024 }}", 268_435_456.0),
            "256Mi"
        );
        assert_eq!(
            render("{{ $value | humanizePercentage }}", 0.9512),
            "95.12%"
        );
        assert_eq!(
            render("{{ $value | humanizeDuration }}", 93_784.0),
            "1d 2h 3m 4s"
        );
        assert_eq!(
            render("{{ $value | humanizeDuration }}", 3615.0),
            "1h 0m 15s"
        );
        assert_eq!(render("{{ $value | humanizeDuration }}", 15.5), "15.5s");
        assert_eq!(render("{{ $value | humanizeDuration }}", 0.5), "500ms");
        assert_eq!(render("{{ .labels.host | humanize }}", 0.0), "web-1");
    }

    #[test]
    fn urlquery_escapes_labels_for_links() {
        assert_eq!(
            render(
                "https://kibana/app/discover#/?_a=(query:(query:'log.file.path:{{ $labels.log.file.path | urlquery }}'))",
                0.0
            ),
            "https://kibana/app/discover#/?_a=(query:(query:'log.file.path:%2Fvar%2Flog%2Fx'))"
        );
        assert_eq!(render("{{ $value | urlquery }}", 1.5), "1.5");
        let labels = [label("q", "a b&c=d\"é")];
        let template = Template::parse("{{ $labels.q | urlquery }}").unwrap();
        assert_eq!(template.render(&labels, 0.0), "a+b%26c%3Dd%22%C3%A9");
    }

    #[test]
    fn unknown_references_fail_at_load_time() {
        assert_eq!(
            Template::parse("{{ .Labels.host }}").unwrap_err(),
            "unknown template reference `{{ .Labels.host }}` (expected .labels.NAME, \
             $labels.NAME, .value or $value)"
        );
        assert_eq!(
            Template::parse("{{ $value | percent }}").unwrap_err(),
            "unknown template function `percent` in `{{ $value | percent }}` (expected \
             humanize, humanize1024, humanizePercentage, humanizeDuration or urlquery)"
        );
        assert_eq!(
            Template::parse("{{ $value ").unwrap_err(),
            "unclosed `{{` in `{{ $value `"
        );
    }
}
