//! The Debian package (issue 27, part 5): what `scripts/package.sh`
//! (cargo-deb, metadata in Cargo.toml) puts in it, and that the config it
//! ships passes `holdfast check` as shipped.
//!
//! The config and unit checks always run (milliseconds). The package
//! itself is checked only when asked, so the normal test run stays fast:
//! - `HOLDFAST_DEB=path/to/holdfast_*.deb`: that package (CI builds it
//!   with `scripts/package.sh`, a release build, then runs this test);
//! - `HOLDFAST_DEB=build`: a package made here with cargo-deb from the
//!   test build's binary (`cargo deb --no-build`; stripping and packing
//!   the debug binary takes a minute or two);
//! - otherwise the test says it skipped the package and how to ask.

use std::path::{Path, PathBuf};
use std::process::Command;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const HOLDFAST: &str = env!("CARGO_BIN_EXE_holdfast");

fn repo(p: &str) -> PathBuf {
    Path::new(REPO).join(p)
}

/// `holdfast check -c config` with an empty environment: exit status and
/// output.
fn check(bin: &Path, config: &Path) -> (bool, String) {
    let out = Command::new(bin)
        .args(["check", "-c"])
        .arg(config)
        .env_clear()
        .output()
        .expect("run holdfast check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_packaged_config_passes_check_as_shipped() {
    let (ok, text) = check(Path::new(HOLDFAST), &repo("packaging/deb/config.toml"));
    assert!(ok, "{text}");
    assert!(!text.contains("warning"), "{text}");
    assert!(
        text.contains("0.0.0.0:4201, [::]:4201"),
        "both families: {text}"
    );
}

/// The line `Key=...` of a unit file (the first one).
fn unit_key<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn the_units_run_the_packaged_binary_and_reload_with_sighup() {
    let proxy = std::fs::read_to_string(repo("scripts/holdfast.service")).unwrap();
    assert_eq!(
        unit_key(&proxy, "ExecStart"),
        Some("/usr/bin/holdfast run -c /etc/holdfast/config.toml")
    );
    assert_eq!(
        unit_key(&proxy, "ExecStartPre"),
        Some("/usr/bin/holdfast check -c /etc/holdfast/config.toml")
    );
    assert_eq!(
        unit_key(&proxy, "ExecReload"),
        Some("/bin/kill -HUP $MAINPID")
    );
    assert_eq!(unit_key(&proxy, "User"), Some("holdfast"));
    assert_eq!(unit_key(&proxy, "Type"), Some("notify"));
    assert!(
        proxy.contains("systemctl kill -s USR2 --kill-whom=main holdfast"),
        "the unit documents the upgrade command"
    );
    let irc = std::fs::read_to_string(repo("scripts/holdfast-irc.service")).unwrap();
    assert_eq!(
        unit_key(&irc, "ExecStart"),
        Some("/usr/bin/holdfast irc -c /etc/holdfast/config.toml")
    );
    assert_eq!(unit_key(&irc, "User"), Some("holdfast"));
    // The relay does not handle SIGHUP: a reload would stop it.
    assert_eq!(unit_key(&irc, "ExecReload"), None);
}

#[test]
fn every_asset_of_the_package_exists() {
    let manifest: toml::Table = std::fs::read_to_string(repo("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let deb = &manifest["package"]["metadata"]["deb"];
    let assets = deb["assets"].as_array().expect("assets");
    assert!(assets.len() >= 4, "{assets:?}");
    for a in assets {
        let src = a[0].as_str().unwrap();
        if src.starts_with("target/") {
            continue;
        }
        assert!(repo(src).is_file(), "asset {src} is missing");
    }
    for key in ["changelog", "maintainer-scripts"] {
        let p = deb[key].as_str().unwrap();
        assert!(repo(p).exists(), "{key} {p} is missing");
    }
    for s in ["postinst", "postrm"] {
        let text = std::fs::read_to_string(repo("packaging/deb").join(s)).unwrap();
        assert!(text.contains("#DEBHELPER#"), "{s}");
    }
}

/// The package to check: `HOLDFAST_DEB`, or one made here with cargo-deb
/// from the test build's binary; `None` (said why) when neither.
fn package(dir: &Path) -> Option<PathBuf> {
    match std::env::var_os("HOLDFAST_DEB") {
        None => {
            eprintln!(
                "SKIPPED the package's contents: set HOLDFAST_DEB to a package \
                 (scripts/package.sh builds one) or to \"build\" (needs cargo-deb)"
            );
            return None;
        }
        Some(p) if p != "build" => return Some(PathBuf::from(p)),
        Some(_) => {}
    }
    // cargo-deb packages `<target dir>/release/holdfast`: give it a
    // target dir of its own holding this test build's binary.
    let target = dir.join("target");
    std::fs::create_dir_all(target.join("release")).unwrap();
    std::fs::copy(HOLDFAST, target.join("release/holdfast")).unwrap();
    let out_deb = dir.join("holdfast-test.deb");
    let out = Command::new("cargo")
        .args([
            "deb",
            "--no-build",
            "--strip",
            "--fast",
            "--locked",
            "--output",
        ])
        .arg(&out_deb)
        .current_dir(REPO)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("run cargo deb");
    assert!(
        out.status.success(),
        "cargo deb:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(out_deb)
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let out = Command::new("dpkg-deb")
        .args(args)
        .arg(deb)
        .output()
        .expect("dpkg-deb");
    assert!(out.status.success(), "dpkg-deb {args:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_package_holds_the_binary_units_config_and_user() {
    let dir = std::env::temp_dir().join(format!("holdfast-package-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let Some(deb) = package(&dir) else {
        return;
    };
    let contents = dpkg_deb(&["--contents"], &deb);
    let has = |path: &str, mode: &str| {
        contents
            .lines()
            .any(|l| l.starts_with(mode) && l.ends_with(path))
    };
    assert!(has("./usr/bin/holdfast", "-rwxr-xr-x"), "{contents}");
    assert!(
        has("./etc/holdfast/config.toml", "-rw-r--r--"),
        "{contents}"
    );
    let unit_dir = if has("./usr/lib/systemd/system/holdfast.service", "-rw-r--r--") {
        "./usr/lib/systemd/system"
    } else {
        "./lib/systemd/system"
    };
    for unit in ["holdfast.service", "holdfast-irc.service"] {
        assert!(
            has(&format!("{unit_dir}/{unit}"), "-rw-r--r--"),
            "{unit}: {contents}"
        );
    }
    assert!(
        has("./usr/share/man/man1/holdfast.1.gz", "-rw-r--r--"),
        "{contents}"
    );
    assert!(
        has("./usr/share/doc/holdfast/copyright", "-rw-r--r--"),
        "{contents}"
    );

    let field = |f: &str| {
        dpkg_deb(&["--field"], &deb)
            .lines()
            .find_map(|l| l.strip_prefix(f)?.strip_prefix(": ").map(str::to_string))
    };
    assert_eq!(field("Package").as_deref(), Some("holdfast"));
    assert!(field("Depends").unwrap_or_default().contains("adduser"));

    let ctrl = dir.join("control");
    let x = Command::new("dpkg-deb")
        .arg("--control")
        .arg(&deb)
        .arg(&ctrl)
        .status()
        .unwrap();
    assert!(x.success());
    let conffiles = std::fs::read_to_string(ctrl.join("conffiles")).unwrap();
    assert!(
        conffiles.lines().any(|l| l == "/etc/holdfast/config.toml"),
        "{conffiles}"
    );
    let postinst = std::fs::read_to_string(ctrl.join("postinst")).unwrap();
    assert!(postinst.contains("adduser --system"), "{postinst}");
    assert!(
        postinst.contains(
            "dpkg-statoverride --update --add root holdfast 0640 /etc/holdfast/config.toml"
        ),
        "{postinst}"
    );
    // A package upgrade must not stop or restart the proxy (every player
    // would be dropped): no stop in prerm, no restart in postinst.
    // (prerm stops the units on `remove` only.)
    let prerm = std::fs::read_to_string(ctrl.join("prerm")).unwrap_or_default();
    let lines: Vec<&str> = prerm.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.contains(" stop ") {
            let cond = lines[..i].iter().rev().find(|l| l.starts_with("if "));
            assert!(
                cond.is_some_and(|c| c.contains("\"$1\" = remove")),
                "prerm stops a unit on upgrade:\n{prerm}"
            );
        }
    }
    assert!(
        !postinst.contains("restart"),
        "postinst restarts a unit:\n{postinst}"
    );

    // The config as shipped in the package passes `check`.
    let root = dir.join("root");
    let x = Command::new("dpkg-deb")
        .arg("--extract")
        .arg(&deb)
        .arg(&root)
        .status()
        .unwrap();
    assert!(x.success());
    let config = root.join("etc/holdfast/config.toml");
    let (ok, text) = check(Path::new(HOLDFAST), &config);
    assert!(ok, "{text}");
    // And the packaged binary accepts it too (when it runs here).
    let (ok, text) = check(&root.join("usr/bin/holdfast"), &config);
    assert!(ok, "the packaged binary: {text}");
    let _ = std::fs::remove_dir_all(&dir);
}
