//! Fuzzes the parser of scrape bodies (Prometheus text 0.0.4 and OpenMetrics)
//! with any bytes a target can return: every body is read or refused with the
//! line it failed on, never a panic, and every sample it reads has a valid name,
//! named labels and, in OpenMetrics, comes before `# EOF`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_agent::scrape::exposition::{Format, ParseFailure, parse};

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let Ok(body) = std::str::from_utf8(body) else {
        return;
    };
    let format = if first & 1 == 1 {
        Format::OpenMetrics
    } else {
        Format::Text
    };
    let lines = body.split('\n').count();
    let result = parse(body, format, |sample| {
        assert!(!sample.name.is_empty());
        assert!(sample.labels.iter().all(|(name, _)| !name.is_empty()));
        assert!(sample.name.ends_with(sample.suffix));
        Ok::<(), ()>(())
    });
    match result {
        Ok(()) => {}
        Err(ParseFailure::Malformed(error)) => {
            assert!((1..=lines).contains(&error.line), "{error}");
        }
        Err(ParseFailure::Refused(())) => unreachable!("nothing is refused"),
    }
});
