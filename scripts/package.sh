#!/usr/bin/env bash
# Builds the Debian package with cargo-deb (installed from crates.io when
# missing), checks what it holds, and runs lintian on it when installed.
#
#   scripts/package.sh               release build -> target/debian/holdfast_<version>-1_<arch>.deb
#   scripts/package.sh --no-build    package the binary already in target/release
#   scripts/package.sh --fast        quicker, larger compression (any cargo deb option passes through)
#
# Then: sudo apt install ./target/debian/holdfast_*.deb   (docs/install.md)
# CI runs this, then `HOLDFAST_DEB=<the .deb> cargo nextest run --test package`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deb >/dev/null 2>&1; then
  echo "== cargo-deb not found; installing it from crates.io" >&2
  cargo install cargo-deb --locked
fi

# --strip: [profile.release] keeps line tables for backtraces, which
# cargo-deb would otherwise leave in (lintian: unstripped-binary-or-object).
echo "== cargo deb --locked --strip $*"
deb=$(cargo deb --locked --strip "$@" | tail -n 1)
[ -f "$deb" ] || { echo "cargo deb did not name a package (got: $deb)" >&2; exit 1; }

echo "== $deb"
dpkg-deb --field "$deb" Package Version Architecture Depends Installed-Size
echo "== contents"
dpkg-deb --contents "$deb" | awk '{ print $1, $6, $7, $8 }'
echo "== conffiles"
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles

# The config as shipped must pass `holdfast check` with nothing set in the
# environment (the package's binary checks the package's config).
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb --extract "$deb" "$work"
echo "== holdfast check (the packaged binary on the packaged config, empty environment)"
env -i "$work/usr/bin/holdfast" check -c "$work/etc/holdfast/config.toml"

if command -v lintian >/dev/null 2>&1; then
  echo "== lintian"
  # Fails on any error or warning; info tags are shown, not fatal.
  lintian --fail-on error,warning --info --display-info "$deb"
  echo "lintian: clean (no errors, no warnings)"
else
  echo "== lintian is not installed (apt-get install lintian); not checked"
fi
echo "$deb"
