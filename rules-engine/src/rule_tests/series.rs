//! Input series of rule tests in promtool notation: `'if.in.octets{host="r1",ifName="eth0"}'`
//! with values `'1 2 3x10 5+1x4 _x2'`.
//!
//! Value notation, as promtool: `a` is one sample; `axn` is `a` repeated n+1 times
//! (shorthand for `a+0xn`); `a+bxn` is `a a+b a+2b ... a+nb` (n+1 samples); `a-bxn`
//! counts down the same way; `_` is a missing sample and `_xn` is n missing
//! samples. `stale` markers are not supported.

use std::collections::BTreeMap;

/// Parses `name{label="value",...}` (the braces are optional).
pub(crate) fn parse_series(text: &str) -> Result<(String, BTreeMap<String, String>), String> {
    let text = text.trim();
    let (name, rest) = match text.find('{') {
        Some(open) => (&text[..open], Some(&text[open + 1..])),
        None => (text, None),
    };
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(format!("series `{text}` needs a metric name before `{{`"));
    }
    let mut labels = BTreeMap::new();
    let Some(rest) = rest else {
        return Ok((name.to_owned(), labels));
    };
    let Some(inside) = rest.trim_end().strip_suffix('}') else {
        return Err(format!("series `{text}`: missing `}}` at the end"));
    };
    let mut chars = inside.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let label: String = std::iter::from_fn(|| {
            chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
        })
        .collect();
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if label.is_empty() || chars.next() != Some('=') || chars.next() != Some('"') {
            return Err(format!(
                "series `{text}`: labels are written `name=\"value\"`, separated by commas"
            ));
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => return Err(format!("series `{text}`: unclosed label value")),
                },
                Some(c) => value.push(c),
                None => return Err(format!("series `{text}`: unclosed label value")),
            }
        }
        labels.insert(label, value);
    }
    Ok((name.to_owned(), labels))
}

/// Expands promtool value notation into one entry per interval step, `None` for a
/// missing sample.
pub(crate) fn expand_values(text: &str) -> Result<Vec<Option<f64>>, String> {
    let mut values = Vec::new();
    for item in text.split_whitespace() {
        let bad = |reason: &str| format!("values: `{item}`: {reason}");
        if item == "stale" {
            return Err(bad(
                "stale markers are not supported; use `_` for a missing sample",
            ));
        }
        let Some((head, count)) = item.rsplit_once('x') else {
            values.push(if item == "_" {
                None
            } else {
                Some(number(item).map_err(|reason| bad(&reason))?)
            });
            continue;
        };
        let count: usize = count
            .parse()
            .map_err(|_| bad("expected a repeat count after `x`"))?;
        if head == "_" {
            values.extend(std::iter::repeat_n(None, count));
            continue;
        }
        // The sign between start and step: not the leading sign of the start, and
        // not the sign of an exponent.
        let split = head
            .char_indices()
            .skip(1)
            .find(|&(index, c)| {
                (c == '+' || c == '-') && !matches!(head.as_bytes()[index - 1], b'e' | b'E')
            })
            .map(|(index, _)| index);
        let (start, step) = match split {
            Some(index) => {
                let step = number(&head[index + 1..]).map_err(|reason| bad(&reason))?;
                let sign = if head.as_bytes()[index] == b'-' {
                    -1.0
                } else {
                    1.0
                };
                (
                    number(&head[..index]).map_err(|reason| bad(&reason))?,
                    sign * step,
                )
            }
            None => (number(head).map_err(|reason| bad(&reason))?, 0.0),
        };
        values.extend((0..=count).map(|n| Some(start + step * n as f64)));
    }
    Ok(values)
}

fn number(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|value| value.is_finite())
        .ok_or_else(|| format!("`{text}` is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_like_promtool() {
        let some = |values: &[f64]| values.iter().copied().map(Some).collect::<Vec<_>>();
        assert_eq!(expand_values("1 2 3").unwrap(), some(&[1.0, 2.0, 3.0]));
        assert_eq!(
            expand_values("-2+4x3").unwrap(),
            some(&[-2.0, 2.0, 6.0, 10.0])
        );
        assert_eq!(
            expand_values("1-2x4").unwrap(),
            some(&[1.0, -1.0, -3.0, -5.0, -7.0])
        );
        assert_eq!(expand_values("1x4").unwrap(), some(&[1.0; 5]));
        assert_eq!(expand_values("9.5e9x1").unwrap(), some(&[9.5e9, 9.5e9]));
        assert_eq!(
            expand_values("1e+3+1e+2x1").unwrap(),
            some(&[1000.0, 1100.0])
        );
        assert_eq!(
            expand_values("1 _x3 _ 2").unwrap(),
            vec![Some(1.0), None, None, None, None, Some(2.0)]
        );
    }

    #[test]
    fn bad_values_say_why() {
        assert_eq!(
            expand_values("1 stale").unwrap_err(),
            "values: `stale`: stale markers are not supported; use `_` for a missing sample"
        );
        assert_eq!(
            expand_values("1xx").unwrap_err(),
            "values: `1xx`: expected a repeat count after `x`"
        );
        assert_eq!(
            expand_values("one").unwrap_err(),
            "values: `one`: `one` is not a number"
        );
    }

    #[test]
    fn reads_series_selectors() {
        let (name, labels) =
            parse_series(r#"if.in.octets{host="r1", ifName="Te1/1",descr="say \"hi\""}"#).unwrap();
        assert_eq!(name, "if.in.octets");
        assert_eq!(labels["host"], "r1");
        assert_eq!(labels["ifName"], "Te1/1");
        assert_eq!(labels["descr"], "say \"hi\"");
        assert_eq!(parse_series("host.load.1m").unwrap().1.len(), 0);
        assert_eq!(parse_series("m{}").unwrap().1.len(), 0);
        assert_eq!(
            parse_series("m{a=b}").unwrap_err(),
            "series `m{a=b}`: labels are written `name=\"value\"`, separated by commas"
        );
        assert_eq!(
            parse_series("m{a=\"b\"").unwrap_err(),
            "series `m{a=\"b\"`: missing `}` at the end"
        );
        assert_eq!(
            parse_series("{a=\"b\"}").unwrap_err(),
            "series `{a=\"b\"}` needs a metric name before `{`"
        );
    }
}
