#!/usr/bin/env bash
# Builds a real TinyMUSH 4.0 from its public source (CMake), runs it behind
# holdfast, kills it with -9 under a logged-in player, restarts it and
# checks the player was held and is back (see scripts/realmush.sh).
#
# Usage: scripts/tinymush.sh [SOURCE-DIR-OR-GIT-URL]
#   default source: https://github.com/TinyMUSH/TinyMUSH.git (network)
# Not part of scripts/test.sh: it needs CMake, LMDB, GDBM, PCRE2 and
# libcrypt headers, and minutes of build time.
exec "$(dirname "$0")/realmush.sh" tinymush "$@"
