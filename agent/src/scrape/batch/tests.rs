use super::*;
use crate::scrape::exposition::ExpositionError;

const T0: i64 = 1_700_000_000_000_000_000;
const SECOND: i64 = 1_000_000_000;

fn target() -> ScrapedTarget {
    ScrapedTarget {
        labels: vec![
            ("instance".into(), "web-1:9100".into()),
            ("job".into(), "node".into()),
        ],
        honor_labels: false,
        honor_timestamps: true,
        sample_limit: 0,
    }
}

fn scrape_at(time: i64, body: Result<&str, ScrapeFailure>) -> Scrape<'_> {
    Scrape {
        started_unix_nano: time,
        duration: Duration::from_millis(250),
        body: body.map(|body| (Format::Text, body)),
    }
}

/// A sample as the tests compare it: name, labels, the value's bits, whether it
/// is a float counter, and its time.
type Summary = (String, Vec<(String, String)>, u64, bool, i64);

fn summary(batch: &MetricBatch) -> Vec<Summary> {
    batch
        .samples
        .iter()
        .map(|s| {
            let (bits, counter) = match s.value.unwrap() {
                sample::Value::FloatCounter(v) => (v.to_bits(), true),
                sample::Value::Gauge(v) => (v.to_bits(), false),
                sample::Value::Counter(_) => unreachable!("scrapes give floats"),
            };
            assert_eq!(s.metric_set, "node");
            let labels = s
                .labels
                .iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect();
            (s.name.clone(), labels, bits, counter, s.time_unix_nano)
        })
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

const BODY: &str = "# TYPE node_cpu_seconds_total counter\n\
                    node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 100.5\n\
                    # TYPE node_load1 gauge\n\
                    node_load1{job=\"inner\"} 0.25 1700000001000\n";

#[test]
fn a_scrape_gives_its_samples_and_the_series_prometheus_records() {
    let mut previous = PreviousSeries::default();
    let (batch, failure) = scrape_batch(&target(), scrape_at(T0, Ok(BODY)), &mut previous, "test");
    assert!(failure.is_none());
    let resource = batch.resource.as_ref().unwrap();
    assert_eq!(
        (resource.id.as_str(), resource.host_name.as_str()),
        ("web-1:9100", "web-1")
    );
    assert_eq!(
        resource.attributes,
        [label("instance", "web-1:9100"), label("job", "node")]
    );
    assert_eq!(
        summary(&batch),
        [
            (
                "node_cpu_seconds_total".into(),
                labels(&[("cpu", "0"), ("mode", "idle")]),
                100.5f64.to_bits(),
                true,
                T0
            ),
            (
                "node_load1".into(),
                labels(&[("exported_job", "inner")]),
                0.25f64.to_bits(),
                false,
                1_700_000_001_000_000_000
            ),
            ("up".into(), vec![], 1f64.to_bits(), false, T0),
            (
                "scrape_duration_seconds".into(),
                vec![],
                0.25f64.to_bits(),
                false,
                T0
            ),
            (
                "scrape_samples_scraped".into(),
                vec![],
                2f64.to_bits(),
                false,
                T0
            ),
        ]
    );
}

#[test]
fn honor_labels_keeps_exposed_labels_and_honor_timestamps_off_uses_the_scrape_time() {
    let target = ScrapedTarget {
        honor_labels: true,
        honor_timestamps: false,
        ..target()
    };
    let (batch, _) = scrape_batch(
        &target,
        scrape_at(T0, Ok(BODY)),
        &mut PreviousSeries::default(),
        "test",
    );
    let load = &summary(&batch)[1];
    assert_eq!((load.1.clone(), load.4), (labels(&[("job", "inner")]), T0));
}

#[test]
fn a_disappearing_series_and_a_failed_target_get_staleness_markers() {
    let mut previous = PreviousSeries::default();
    scrape_batch(&target(), scrape_at(T0, Ok(BODY)), &mut previous, "test");
    let later = T0 + 15 * SECOND;
    let only_cpu = "# TYPE node_cpu_seconds_total counter\n\
                    node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 110.5\n";
    let (batch, _) = scrape_batch(
        &target(),
        scrape_at(later, Ok(only_cpu)),
        &mut previous,
        "test",
    );
    let samples = summary(&batch);
    let marker = vigil_proto::staleness::STALE_MARKER_BITS;
    assert_eq!(
        samples[1],
        (
            "node_load1".into(),
            labels(&[("exported_job", "inner")]),
            marker,
            false,
            later
        )
    );
    assert_eq!(samples.len(), 5);

    let failed = later + 15 * SECOND;
    let (batch, failure) = scrape_batch(
        &target(),
        scrape_at(
            failed,
            Err(ScrapeFailure::Fetch("connection refused".into())),
        ),
        &mut previous,
        "test",
    );
    assert_eq!(failure.unwrap().to_string(), "connection refused");
    let samples = summary(&batch);
    assert_eq!(
        samples[0],
        (
            "node_cpu_seconds_total".into(),
            labels(&[("cpu", "0"), ("mode", "idle")]),
            marker,
            true,
            failed
        )
    );
    assert_eq!(samples[1].0, "up");
    assert_eq!(samples[1].2, 0f64.to_bits());
    assert_eq!(samples[3].2, 0f64.to_bits());
    // Nothing is left to mark: the next failure has only the target's series.
    let (batch, _) = scrape_batch(
        &target(),
        scrape_at(
            failed + 15 * SECOND,
            Err(ScrapeFailure::Fetch("refused".into())),
        ),
        &mut previous,
        "test",
    );
    assert_eq!(batch.samples.len(), 3);
}

#[test]
fn a_bad_body_or_too_many_samples_fail_the_scrape_with_a_clear_error() {
    let (batch, failure) = scrape_batch(
        &target(),
        scrape_at(T0, Ok("ok 1\nbad{a=\"\\q\"} 1\n")),
        &mut PreviousSeries::default(),
        "test",
    );
    assert!(matches!(
        failure,
        Some(ScrapeFailure::Exposition(ExpositionError { line: 2, .. }))
    ));
    assert_eq!(
        failure.unwrap().to_string(),
        "invalid exposition: line 2: `bad`: label `a`: invalid escape `\\q` (only \\\\, \\\" and \\n)"
    );
    assert_eq!(summary(&batch)[0].2, 0f64.to_bits());
    let limited = ScrapedTarget {
        sample_limit: 1,
        ..target()
    };
    let (batch, failure) = scrape_batch(
        &limited,
        scrape_at(T0, Ok(BODY)),
        &mut PreviousSeries::default(),
        "test",
    );
    assert_eq!(
        failure.unwrap().to_string(),
        "sample_limit exceeded: more than 1 samples"
    );
    assert_eq!(batch.samples.len(), 3);
}

#[test]
fn the_host_of_an_instance_drops_its_port() {
    assert_eq!(host_of("web-1:9100"), "web-1");
    assert_eq!(host_of("[::1]:9100"), "::1");
    assert_eq!(host_of("web-1"), "web-1");
    assert_eq!(host_of("::1"), "::1");
}
