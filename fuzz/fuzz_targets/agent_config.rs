//! Fuzzes the agent's configuration reader (`AgentConfig::from_yaml`): any text
//! gives a configuration or an error that names the file, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_agent::AgentConfig;

fuzz_target!(|text: &str| {
    if let Err(error) = AgentConfig::from_yaml(text, "agent.yaml") {
        let message = error.to_string();
        assert!(
            message.starts_with("agent.yaml"),
            "the error does not name the file: {message}"
        );
    }
});
