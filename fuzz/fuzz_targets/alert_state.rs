//! Fuzzes the decoder of `AlertState` payloads: never a panic, refusals name the type,
//! accepted batches survive re-encoding unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_proto::v1::AlertState;

fuzz_target!(|payload: &[u8]| {
    vigil_fuzz::decode_and_round_trip::<AlertState>(payload);
});
