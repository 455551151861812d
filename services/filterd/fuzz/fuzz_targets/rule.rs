//! Fuzzes the rule parser with arbitrary words (what `strata filter` and
//! the configuration file pass on), and checks that a parsed rule prints
//! back to words that parse to the same rule.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_filterd::rule::{parse_command, parse_rule};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let words: Vec<&str> = text.split(|c: char| c == ' ' || c == '\0').collect();
    let _ = parse_command(&words);
    if let Ok(r) = parse_rule(&words) {
        let again = r.to_words();
        let again: Vec<&str> = again.iter().map(String::as_str).collect();
        assert_eq!(parse_rule(&again).as_ref().ok(), Some(&r));
    }
});
