//! Fuzzes the stages' configuration reader (`AggregatorConfig::from_yaml`): any
//! text gives a configuration or an error that names the file, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_aggregator::config::AggregatorConfig;

fuzz_target!(|text: &str| {
    if let Err(error) = AggregatorConfig::from_yaml("aggregator.yaml", text) {
        let message = error.to_string();
        assert!(
            message.starts_with("aggregator.yaml"),
            "the error does not name the file: {message}"
        );
    }
});
