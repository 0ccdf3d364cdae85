//! The config loader never panics, and every error it reports points at a
//! real position in the text.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = holdfast::config::Config::parse(Path::new("fuzz.toml"), text) {
        let lines = text.split('\n').count();
        assert!(e.line >= 1 && e.line <= lines.max(1), "line {} of {lines}: {e}", e.line);
        assert!(e.col >= 1, "{e}");
    }
});
