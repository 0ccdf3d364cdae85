//! What a player sends: the line splitter never panics, never returns a
//! line over the cap, and gives the same lines however the bytes are split;
//! the login and spoof recognisers never panic on any line.
#![no_main]

use holdfast::session::input::{Input, Item};
use libfuzzer_sys::fuzz_target;

const MAX_LINE: usize = 64;

fn run(chunks: &[&[u8]]) -> Vec<Item> {
    let mut input = Input::new(128);
    let mut out = Vec::new();
    for c in chunks {
        input.feed(c, MAX_LINE, &mut out);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let cut = data.first().map(|b| *b as usize % (data.len().max(1))).unwrap_or(0);
    let whole = run(&[data]);
    let split = run(&[&data[..cut], &data[cut..]]);
    assert_eq!(whole, split, "split at {cut}");
    for item in &whole {
        if let Item::Line(l) = item {
            assert!(l.len() <= MAX_LINE);
            let _ = holdfast::login::parse_connect(l);
            let _ = holdfast::login::is_quit(l, "QUIT");
        }
    }
});
