//! Inputs the simulation fuzz target found failing, kept as regression
//! tests: each file in `fuzz_inputs/` holds one input in hex and is named
//! after what it caught. A new finding goes there once it is fixed.

use std::path::Path;

use keel_sim::fuzz_input::run_input;
use keel_sim::report::failure_report;

fn decode_hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|byte| !byte.is_ascii_whitespace()).collect();
    assert!(digits.len() % 2 == 0, "odd number of hex digits");
    let digit = |byte: u8| (byte as char).to_digit(16).expect("a hex digit") as u8;
    digits.chunks(2).map(|pair| digit(pair[0]) << 4 | digit(pair[1])).collect()
}

#[test]
fn kept_fuzz_inputs_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_inputs");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("the kept inputs' directory")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "hex"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no kept inputs in {}", dir.display());
    for file in files {
        let input = decode_hex(&std::fs::read_to_string(&file).expect("a kept input"));
        let name = file.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let result = run_input(&input).unwrap_or_else(|| panic!("{name}: the simulator refuses this input"));
        assert!(result.ok(), "{name}:\n{}", failure_report(&result));
        assert!(!result.history.ops.is_empty(), "{name}: no client operation ran");
    }
}
