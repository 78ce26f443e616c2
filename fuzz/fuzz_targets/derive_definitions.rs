//! Fuzzes the derive stage's definition files (`DefinitionSet::from_files`, on
//! top of the built-ins): any text gives a definition set or errors that each
//! name the file, never a panic; an accepted set builds a derive engine.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::time::Duration;
use vigil_aggregator::derive::definitions::DefinitionSet;
use vigil_aggregator::derive::engine::{Engine, EngineSettings};
use vigil_aggregator::derive::rates::RateSettings;

const FILE: &str = "fleet.yaml";

fuzz_target!(|text: &str| {
    let files = BTreeMap::from([(FILE.to_owned(), text.to_owned())]);
    match DefinitionSet::from_files(&files) {
        Ok(set) => {
            assert!(set.len() >= DefinitionSet::built_in().len());
            let settings = EngineSettings {
                rates: RateSettings {
                    max_gap_intervals: 3,
                    default_interval: Duration::from_secs(60),
                },
                allowed_lateness: Duration::from_secs(60),
                group_wait: Duration::from_secs(10),
                producer: "fuzz".to_owned(),
                max_series: 100_000,
            };
            Engine::new(&set, settings);
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "refused without an error");
            for error in errors {
                assert_eq!(error.file(), FILE, "{error}");
                assert!(error.to_string().starts_with(FILE), "{error}");
            }
        }
    }
});
