use super::*;
use proptest::prelude::*;

fn all(body: &str, format: Format) -> Result<Vec<ExposedSample<'_>>, ExpositionError> {
    let mut samples = Vec::new();
    parse(body, format, |sample| {
        samples.push(sample);
        Ok::<(), ()>(())
    })
    .map_err(|failure| match failure {
        ParseFailure::Malformed(error) => error,
        ParseFailure::Refused(()) => unreachable!("the callback refuses nothing"),
    })?;
    Ok(samples)
}

fn error(body: &str, format: Format) -> String {
    all(body, format).unwrap_err().to_string()
}

const NODE_EXPORTER: &str = r#"# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu="0",mode="idle"} 3.70104898e+06
node_cpu_seconds_total{cpu="0",mode="user"} 12345.67
# HELP node_load1 1m load average.
# TYPE node_load1 gauge
node_load1 0.31
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.1"} 3
http_request_duration_seconds_bucket{le="+Inf"} 5
http_request_duration_seconds_sum 0.75
http_request_duration_seconds_count 5
# TYPE rpc_seconds summary
rpc_seconds{quantile="0.99"} NaN
rpc_seconds_sum 1.5
rpc_seconds_count 3
some_untyped{path="C:\\dir\"x\"\nend"} -Inf 1700000000123
"#;

#[test]
fn the_text_format_gives_every_sample_with_its_family_and_labels() {
    let samples = all(NODE_EXPORTER, Format::Text).unwrap();
    let summary: Vec<(&str, FamilyType, &str, bool)> = samples
        .iter()
        .map(|s| (s.name, s.family, s.suffix, s.is_counter()))
        .collect();
    use FamilyType::*;
    assert_eq!(
        summary,
        [
            ("node_cpu_seconds_total", Counter, "", true),
            ("node_cpu_seconds_total", Counter, "", true),
            ("node_load1", Gauge, "", false),
            (
                "http_request_duration_seconds_bucket",
                Histogram,
                "_bucket",
                true
            ),
            (
                "http_request_duration_seconds_bucket",
                Histogram,
                "_bucket",
                true
            ),
            ("http_request_duration_seconds_sum", Histogram, "_sum", true),
            (
                "http_request_duration_seconds_count",
                Histogram,
                "_count",
                true
            ),
            ("rpc_seconds", Summary, "", false),
            ("rpc_seconds_sum", Summary, "_sum", true),
            ("rpc_seconds_count", Summary, "_count", true),
            ("some_untyped", Untyped, "", false),
        ]
    );
    assert_eq!(samples[0].value, 3_701_048.98);
    assert_eq!(
        samples[0].labels,
        [("cpu", Cow::Borrowed("0")), ("mode", Cow::Borrowed("idle"))]
    );
    assert_eq!(samples[4].labels, [("le", Cow::Borrowed("+Inf"))]);
    assert!(samples[7].value.is_nan());
    let untyped = &samples[10];
    assert_eq!(untyped.value, f64::NEG_INFINITY);
    assert_eq!(untyped.timestamp_ms, Some(1_700_000_000_123));
    assert_eq!(untyped.labels[0].1, "C:\\dir\"x\"\nend");
    assert!(samples[..10].iter().all(|s| s.timestamp_ms.is_none()));
}

#[test]
fn openmetrics_has_second_timestamps_exemplars_and_an_end() {
    let body = "# TYPE requests counter\n\
                requests_total{code=\"200\"} 1027 1700000000.5 # {trace_id=\"abc\"} 1 1700000000.1\n\
                requests_created{code=\"200\"} 1699999000\n\
                # TYPE build info\n\
                build_info{version=\"1.2\"} 1\n\
                # EOF\n";
    let samples = all(body, Format::OpenMetrics).unwrap();
    assert_eq!(samples.len(), 3);
    assert_eq!(
        (samples[0].suffix, samples[0].is_counter()),
        ("_total", true)
    );
    assert_eq!(samples[0].value, 1027.0);
    assert_eq!(samples[0].timestamp_ms, Some(1_700_000_000_500));
    assert_eq!(
        (samples[1].suffix, samples[1].is_counter()),
        ("_created", false)
    );
    assert_eq!(samples[2].family, FamilyType::Info);
    assert_eq!(
        error("# TYPE a gauge\na 1\n", Format::OpenMetrics),
        "line 3: no `# EOF` at the end of an OpenMetrics body"
    );
    assert_eq!(
        error("a 1\n# EOF\nb 2\n", Format::OpenMetrics),
        "line 3: content after `# EOF`"
    );
}

#[test]
fn the_content_type_picks_the_format() {
    assert_eq!(
        Format::of_content_type("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        Format::OpenMetrics
    );
    assert_eq!(
        Format::of_content_type("text/plain; version=0.0.4"),
        Format::Text
    );
    assert_eq!(Format::of_content_type(""), Format::Text);
}

#[test]
fn malformed_lines_are_refused_naming_the_line_and_the_fault() {
    let cases = [
        (
            "ok 1\nbad{a=\"\\x\"} 1\n",
            "line 2: `bad`: label `a`: invalid escape `\\x` (only \\\\, \\\" and \\n)",
        ),
        ("m{a=\"1", "line 1: `m`: label `a`: unterminated value"),
        (
            "m{a=\"1\" 1",
            "line 1: `m`: expected `,` or `}` after label `a`",
        ),
        (
            "m{a=1} 1",
            "line 1: `m`: the value of label `a` is not quoted",
        ),
        (
            "m{a=\"1\",a=\"2\"} 1",
            "line 1: `m`: label `a` appears twice",
        ),
        (
            "m{a=\"1\" b=\"2\"} 1",
            "line 1: `m`: expected `,` or `}` after label `a`",
        ),
        ("m", "line 1: `m` has no value"),
        ("m one", "line 1: `m` has an invalid value `one`"),
        ("m 1 12.5", "line 1: `m` has an invalid timestamp `12.5`"),
        (
            "m 1 2 3",
            "line 1: `m` has unexpected text `3` after its value",
        ),
        ("1m 1", "line 1: invalid metric name `1m`"),
        (
            "# TYPE m flavour\n",
            "line 1: TYPE of `m`: unknown type `flavour`",
        ),
        (
            "\u{0}\u{1}\u{2} 1",
            "line 1: invalid metric name `\u{0}\u{1}\u{2}`",
        ),
    ];
    for (body, expected) in cases {
        assert_eq!(error(body, Format::Text), expected, "{body:?}");
    }
}

#[test]
fn the_callback_stops_the_parse_at_a_sample_limit() {
    let body = "a 1\nb 2\nc 3\n";
    let mut seen = 0;
    let result = parse(body, Format::Text, |_| {
        seen += 1;
        if seen > 2 {
            Err("more than 2 samples")
        } else {
            Ok(())
        }
    });
    assert_eq!(result, Err(ParseFailure::Refused("more than 2 samples")));
    assert_eq!(seen, 3);
}

#[test]
fn crlf_blank_lines_and_other_comments_are_read_past() {
    let body = "# some comment\r\n\r\na{b=\"c\"} 2\r\n  \n";
    let samples = all(body, Format::Text).unwrap();
    assert_eq!(samples.len(), 1);
    assert_eq!(samples[0].value, 2.0);
}

/// A label value as an exposition writes it.
fn escaped(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

proptest! {
    /// Whatever names, label values and values a target writes, the parser reads
    /// back exactly those.
    #[test]
    fn written_samples_read_back(
        samples in prop::collection::vec(
            (
                "[a-zA-Z_:][a-zA-Z0-9_:]{0,20}",
                prop::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,8}", any::<String>(), 0..4),
                any::<f64>(),
                prop::option::of(any::<i64>()),
            ),
            0..20,
        )
    ) {
        let mut body = String::new();
        for (name, labels, value, timestamp) in &samples {
            body.push_str(name);
            let pairs: Vec<String> = labels
                .iter()
                .map(|(label, value)| format!("{label}=\"{}\"", escaped(value)))
                .collect();
            body.push_str(&format!("{{{}}} {value:?}", pairs.join(",")));
            if let Some(timestamp) = timestamp {
                body.push_str(&format!(" {timestamp}"));
            }
            body.push('\n');
        }
        let read = all(&body, Format::Text).unwrap();
        prop_assert_eq!(read.len(), samples.len());
        for (got, (name, labels, value, timestamp)) in read.iter().zip(&samples) {
            prop_assert_eq!(got.name, name.as_str());
            prop_assert_eq!(got.value.to_bits(), value.to_bits());
            prop_assert_eq!(got.timestamp_ms, *timestamp);
            let got_labels: Vec<(&str, &str)> =
                got.labels.iter().map(|(l, v)| (*l, v.as_ref())).collect();
            let want: Vec<(&str, &str)> =
                labels.iter().map(|(l, v)| (l.as_str(), v.as_str())).collect();
            prop_assert_eq!(got_labels, want);
        }
    }

    /// Any body gives samples or an error, never a panic.
    #[test]
    fn any_body_is_read_or_refused(body in any::<String>(), open_metrics in any::<bool>()) {
        let format = if open_metrics { Format::OpenMetrics } else { Format::Text };
        let _ = all(&body, format);
    }
}
