//! Fuzz the daemon's request decoder.
//!
//! Invariants checked:
//! * `decode_request` never panics, whatever the bytes (UTF-8 or not);
//! * every refusal is a `BadRequest` with exactly one non-empty message of
//!   one line;
//! * whatever it accepts, `encode_request` writes as one line that
//!   `decode_request` accepts again and that decodes to an equal `Request`.
#![no_main]

use gw_api::{decode_request, encode_request, ErrorCode, MAX_REQUEST_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let first = match decode_request(data) {
        Ok(request) => request,
        Err(e) => {
            assert_eq!(e.code, ErrorCode::BadRequest, "{e:?}");
            assert_eq!(e.messages.len(), 1, "{e:?}");
            assert!(!e.messages[0].is_empty() && !e.messages[0].contains('\n'), "{e:?}");
            return;
        }
    };
    let line = encode_request(&first);
    assert_eq!(line.last(), Some(&b'\n'));
    assert!(!line[..line.len() - 1].contains(&b'\n'), "encoded request is not one line: {line:?}");
    if line.len() - 1 > MAX_REQUEST_LEN {
        return; // escaping grew it past the limit: refusing it is right
    }
    match decode_request(&line) {
        Ok(again) => assert_eq!(
            first,
            again,
            "round trip changed the request\n--- input ---\n{}\n--- encoded ---\n{}",
            String::from_utf8_lossy(data),
            String::from_utf8_lossy(&line)
        ),
        Err(e) => panic!(
            "encoded request does not decode: {e}\n--- input ---\n{}\n--- encoded ---\n{}",
            String::from_utf8_lossy(data),
            String::from_utf8_lossy(&line)
        ),
    }
});
