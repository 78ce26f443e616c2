//! Fuzzes the decoder of `PartialAggregateBatch` payloads: never a panic, refusals name the type,
//! accepted batches survive re-encoding unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_proto::v1::PartialAggregateBatch;

fuzz_target!(|payload: &[u8]| {
    vigil_fuzz::decode_and_round_trip::<PartialAggregateBatch>(payload);
});
