//! The simulator driven by fuzz bytes (see `keel_sim::fuzz_input`): a whole
//! cluster run whose shape and fault schedule come from the input, so the
//! fuzzer's coverage feedback steers toward fault timings that reach new
//! paths of the node. Every run must pass every property; a failing input is
//! a failing run, printed with its report. No trace hash is kept: the input
//! itself replays the run, and `sim/tests/fuzz_inputs.rs` replays the inputs
//! kept in `sim/tests/fuzz_inputs/`.

#![no_main]

use keel_sim::fuzz_input::run_input;
use keel_sim::report::failure_report;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(result) = run_input(data) {
        assert!(result.ok(), "{}", failure_report(&result));
    }
});
