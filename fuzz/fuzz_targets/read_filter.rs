//! Fuzz the nwfilter XML reader.
//!
//! Invariants checked:
//! * `read_filter` never panics, whatever the (UTF-8) input;
//! * whatever it accepts, `write_filter` writes as XML that `read_filter`
//!   accepts again and that reads back as an equal `Filter`.
#![no_main]

use gw_model::Filter;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = gw_xml::read_filter(text) else {
        return;
    };
    let first: Filter = parsed.value;
    let written = gw_xml::write_filter(&first);
    let reread = match gw_xml::read_filter(&written) {
        Ok(p) => p.value,
        Err(e) => panic!("written filter does not read back: {e}\n--- input ---\n{text}\n--- written ---\n{written}"),
    };
    assert_eq!(first, reread, "round trip changed the filter\n--- input ---\n{text}\n--- written ---\n{written}");
});
