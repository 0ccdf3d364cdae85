#!/usr/bin/env bash
# Builds a real TinyMUX 2.14 from its public source, runs it behind
# holdfast, kills it with -9 under a logged-in player, restarts it and
# checks the player was held and is back (see scripts/realmush.sh).
#
# Usage: scripts/tinymux.sh [SOURCE-DIR-OR-GIT-URL]
#   default source: https://github.com/brazilofmux/tinymux.git (network)
# Not part of scripts/test.sh: it needs a C++17 compiler, OpenSSL and
# PCRE2 headers, and minutes of build time.
exec "$(dirname "$0")/realmush.sh" tinymux "$@"
