//! The documentation cannot drift from the program or from itself:
//!
//! - `docs/configuration.md` names every key the config types accept
//!   (read off the types by `holdfast::config::keys`, not from a list kept
//!   here), names no key they do not accept, and its TOML examples parse
//!   as a config file and together set every key;
//! - every ```toml block anywhere in the docs is a config file holdfast
//!   reads (no misspelt or retired key);
//! - every relative link in `README.md` and `docs/*.md` reaches a file,
//!   and its `#anchor` a heading there;
//! - every `docs/*.md` is reachable from the README;
//! - the README stays a ten-minute read and keeps its two commands.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use holdfast::config::keys;
use regex::Regex;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const REFERENCE: &str = "docs/configuration.md";

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(REPO).join(rel))
        .unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// `README.md` and every `docs/*.md`, as paths relative to the repository.
fn markdown_files() -> Vec<String> {
    let mut files = vec!["README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(Path::new(REPO).join("docs"))
        .expect("docs/ exists")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The lines of a Markdown text that are prose (outside fenced code),
/// with their 1-based line numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut fence: Option<&str> = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        let marker = if t.starts_with("```") {
            Some("```")
        } else if t.starts_with("~~~") {
            Some("~~~")
        } else {
            None
        };
        match (fence, marker) {
            (None, Some(m)) => fence = Some(m),
            (Some(f), Some(m)) if f == m => fence = None,
            (None, None) => out.push((i + 1, line)),
            _ => {}
        }
    }
    out
}

/// The fenced blocks whose info string is `lang`: (first line, text).
fn code_blocks(text: &str, lang: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, bool, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        match current.as_mut() {
            None if t.starts_with("```") => {
                let info = t.trim_start_matches('`').trim();
                current = Some((i + 1, info == lang, String::new()));
            }
            None => {}
            Some(_) if t.starts_with("```") => {
                let (at, wanted, body) = current.take().expect("inside a block");
                if wanted {
                    out.push((at, body));
                }
            }
            Some((_, _, body)) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    out
}

/// Text with inline code spans removed (a link inside backticks is code).
fn without_code_spans(line: &str) -> String {
    static CODE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"`+[^`]*`+").expect("valid regex"));
    CODE.replace_all(line, "").into_owned()
}

/// GitHub's anchor for a heading: lower case, punctuation dropped,
/// spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Every heading anchor of a Markdown text (repeated headings get `-1`,
/// `-2`, ... as on GitHub).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let t = line.trim_start();
        if !t.starts_with('#') {
            continue;
        }
        let title = t.trim_start_matches('#');
        if !title.starts_with(' ') {
            continue;
        }
        let base = slug(title);
        let n = seen.entry(base.clone()).or_insert(0);
        out.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// The links of a Markdown text: (line, target), targets as written.
fn links(text: &str) -> Vec<(usize, String)> {
    static LINK: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r#"\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)"#).expect("valid regex")
    });
    let mut out = Vec::new();
    for (n, line) in prose_lines(text) {
        for c in LINK.captures_iter(&without_code_spans(line)) {
            out.push((n, c[1].to_string()));
        }
    }
    out
}

fn is_external(target: &str) -> bool {
    target.contains("://") || target.starts_with("mailto:")
}

/// Where a relative link from `from` goes: (repository path, anchor).
fn resolve(from: &str, target: &str) -> (PathBuf, Option<String>) {
    let (file, anchor) = match target.split_once('#') {
        Some((f, a)) => (f, Some(a.to_string())),
        None => (target, None),
    };
    let base = Path::new(from).parent().unwrap_or(Path::new(""));
    let mut path = PathBuf::new();
    if file.is_empty() {
        path.push(from);
    } else {
        for part in base.join(file).components() {
            match part {
                std::path::Component::ParentDir => {
                    path.pop();
                }
                std::path::Component::CurDir => {}
                other => path.push(other),
            }
        }
    }
    (path, anchor)
}

#[test]
fn relative_links_reach_a_file_and_a_heading() {
    let files = markdown_files();
    assert!(
        files.len() >= 10,
        "expected README.md and the docs/ guides, found {files:?}"
    );
    let mut checked = 0;
    let mut broken = Vec::new();
    for from in &files {
        let text = read(from);
        for (line, target) in links(&text) {
            if is_external(&target) {
                continue;
            }
            checked += 1;
            let (path, anchor) = resolve(from, &target);
            let full = Path::new(REPO).join(&path);
            if !full.exists() {
                broken.push(format!(
                    "{from}:{line}: {target}: no file {}",
                    path.display()
                ));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if path.extension().is_some_and(|e| e == "md") {
                let have = anchors(&std::fs::read_to_string(&full).unwrap_or_default());
                if !have.contains(&anchor) {
                    broken.push(format!(
                        "{from}:{line}: {target}: no heading #{anchor} in {}",
                        path.display()
                    ));
                }
            }
        }
    }
    assert!(
        checked >= 50,
        "only {checked} relative links found: is the parser still reading links?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_doc_is_reachable_from_the_readme() {
    let mut reached = BTreeSet::from(["README.md".to_string()]);
    let mut todo = vec!["README.md".to_string()];
    while let Some(from) = todo.pop() {
        for (_, target) in links(&read(&from)) {
            if is_external(&target) {
                continue;
            }
            let (path, _) = resolve(&from, &target);
            let path = path.to_string_lossy().into_owned();
            if path.ends_with(".md")
                && Path::new(REPO).join(&path).exists()
                && reached.insert(path.clone())
            {
                todo.push(path);
            }
        }
    }
    let orphans: Vec<String> = markdown_files()
        .into_iter()
        .filter(|f| !reached.contains(f))
        .collect();
    assert!(
        orphans.is_empty(),
        "not linked from README.md (or from a doc it links to): {orphans:?}"
    );
}

/// The keys named in the first column of the reference's `| key | ...`
/// tables, with the line each is on.
fn reference_rows(text: &str) -> BTreeMap<String, usize> {
    let key = Regex::new(r"`([^`]+)`").expect("valid regex");
    let mut out = BTreeMap::new();
    let mut in_key_table = false;
    for (n, line) in prose_lines(text) {
        let t = line.trim();
        if !t.starts_with('|') {
            in_key_table = false;
            continue;
        }
        let first = t
            .trim_start_matches('|')
            .split('|')
            .next()
            .unwrap_or("")
            .trim();
        if first == "key" {
            in_key_table = true;
            continue;
        }
        if !in_key_table || first.starts_with("---") {
            continue;
        }
        for c in key.captures_iter(first) {
            out.entry(c[1].to_string()).or_insert(n);
        }
    }
    out
}

#[test]
fn configuration_reference_names_every_key() {
    let all = keys::keys();
    assert!(
        all.len() >= 100,
        "config::keys found only {} keys: is it still walking RawConfig?",
        all.len()
    );
    let text = read(REFERENCE);
    let rows = reference_rows(&text);
    let missing: Vec<&String> = all.iter().filter(|k| !rows.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "{REFERENCE} has no row (`| `key` | default | ... |` under a `| key |` header) for:\n{}",
        missing
            .iter()
            .map(|k| format!("  {k}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let stale: Vec<String> = rows
        .iter()
        .filter(|(k, _)| !all.contains(k))
        .map(|(k, n)| format!("  {REFERENCE}:{n}: {k}"))
        .collect();
    assert!(
        stale.is_empty(),
        "rows for keys the config does not accept (renamed or removed?):\n{}",
        stale.join("\n")
    );
}

#[test]
fn configuration_reference_examples_set_every_key() {
    let text = read(REFERENCE);
    let blocks = code_blocks(&text, "toml");
    assert!(blocks.len() >= 10, "expected a TOML example per section");
    let mut set = BTreeSet::new();
    for (line, body) in &blocks {
        match keys::keys_in(body) {
            Ok(k) => set.extend(k),
            Err(e) => panic!("{REFERENCE}:{line}: the example is not a valid config file: {e}"),
        }
    }
    let missing: Vec<String> = keys::keys()
        .into_iter()
        .filter(|k| !set.contains(k))
        .collect();
    assert!(
        missing.is_empty(),
        "no ```toml example in {REFERENCE} sets: {missing:?}"
    );
}

#[test]
fn every_toml_example_in_the_docs_is_a_config_file() {
    let mut checked = 0;
    let mut bad = Vec::new();
    for file in markdown_files() {
        let text = read(&file);
        for (line, body) in code_blocks(&text, "toml") {
            checked += 1;
            if let Err(e) = keys::keys_in(&body) {
                bad.push(format!("{file}:{line}: {e}"));
            }
        }
    }
    assert!(checked >= 15, "only {checked} ```toml blocks found");
    assert!(
        bad.is_empty(),
        "```toml blocks holdfast would not read (use ```text for other TOML):\n{}",
        bad.join("\n")
    );
    // The sample config is documentation too.
    keys::keys_in(&read("config.toml")).expect("config.toml reads");
}

#[test]
fn readme_is_a_ten_minute_read_with_its_two_commands() {
    let readme = read("README.md");
    let lines = readme.lines().count();
    assert!(
        lines <= 300,
        "README.md has {lines} lines; keep it under 300 and move detail to docs/"
    );
    for command in ["scripts/run.sh", "scripts/test.sh"] {
        assert!(
            code_blocks(&readme, "sh")
                .iter()
                .any(|(_, b)| b.lines().any(|l| l.trim_start().starts_with(command))),
            "README.md's quick start no longer shows `{command}`"
        );
    }
    assert!(
        read(".ci/run").contains("scripts/test.sh"),
        ".ci/run must run the README's test command"
    );
}

#[test]
fn slugs_follow_github() {
    assert_eq!(
        slug(" Many proxies, one truth (`bus.cluster`)"),
        "many-proxies-one-truth-buscluster"
    );
    assert_eq!(
        slug(" Keep players off the game's own port"),
        "keep-players-off-the-games-own-port"
    );
    assert_eq!(slug(" Front doors: TLS"), "front-doors-tls");
    let a = anchors("# A\n```\n# not a heading\n```\n## A\n");
    assert_eq!(a, BTreeSet::from(["a".to_string(), "a-1".to_string()]));
}

#[test]
fn keys_walks_nested_tables_arrays_and_maps() {
    let keys = keys::keys();
    for k in [
        "game",
        "listen.addrs",
        "backends[].name",
        "heartbeat.password_file",
        "resume.playback_bytes",
        "irc.formats.down",
        "tls.cert_file",
        "metrics.addr",
        "mssp.*",
    ] {
        assert!(keys.iter().any(|x| x == k), "{k} missing from {keys:?}");
    }
    // Spanned's positions are not keys; nor are tables themselves.
    assert!(!keys.iter().any(|k| k.contains("serde_spanned")));
    assert!(!keys.iter().any(|k| k == "listen" || k == "irc.formats"));
}

#[test]
fn keys_in_reads_a_file_strictly() {
    let got = keys::keys_in(
        "game = \"x\"\n[[backends]]\nname = \"a\"\naddr = \"h:1\"\n\
         [mssp]\nHOSTNAME = \"h\"\n[irc.formats]\ndown = \"d\"\n",
    )
    .unwrap();
    let want: BTreeSet<String> = [
        "game",
        "backends[].name",
        "backends[].addr",
        "mssp.*",
        "irc.formats.down",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(got, want);
    assert!(keys::keys_in("[listen]\nbogus = 1\n").is_err());
}
