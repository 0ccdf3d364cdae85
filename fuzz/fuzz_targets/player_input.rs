//! What a player sends: the line splitter never panics, never returns a
//! line over the cap, and gives the same lines however the bytes are split;
//! the login and spoof recognisers never panic on any line.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use holdfast::config::Config;
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

/// The quit rules of a game that takes `QUIT` in any case once logged in
/// (TinyMUX) and of one that takes only exact `QUIT` (PennMUSH).
fn configs() -> &'static [Config; 2] {
    static CONFIGS: OnceLock<[Config; 2]> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        ["tinymux", "pennmush"].map(|flavor| {
            Config::parse(
                Path::new("fuzz.toml"),
                &format!(
                    "flavor = \"{flavor}\"\n[[backends]]\nname = \"game\"\naddr = \"127.0.0.1:4201\"\n"
                ),
            )
            .expect("the fuzz target's config")
        })
    })
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
            for cfg in configs() {
                let t = &cfg.templates;
                let at_screen = holdfast::login::is_quit(l, t, false);
                let logged_in = holdfast::login::is_quit(l, t, true);
                // No flavor takes a line as its quit at the connect screen
                // that it would not take once logged in.
                assert!(!at_screen || logged_in, "{:?}", String::from_utf8_lossy(l));
            }
        }
    }
});
