#!/usr/bin/env bash
# Regenerates the seed files (seed_*) of fuzz_proto, fuzz_rpc, fuzz_jwt,
# fuzz_gateway, fuzz_env_money, fuzz_events and fuzz_metering_snap under tests/fuzz/corpus/ with
# tests/fuzz/gen_seeds.c, built against a plain build's libraries (make
# -j2 tests first). Findings kept as regression cases (regress_*) are left
# alone. The output is committed; run this only to change the seeds.
#
#   tests/fuzz/gen-seeds.sh [BUILD]   (default build)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
build=${1:-build}
pkgs="libczmq libzmq libprotobuf-c hiredis libpq libcurl libmicrohttpd jansson libsodium openssl"
# shellcheck disable=SC2086
cflags=$(pkg-config --cflags $pkgs)
# shellcheck disable=SC2086
libs=$(pkg-config --libs $pkgs)
mkdir -p "$build/fuzz-seeds"
# shellcheck disable=SC2086
${CC:-cc} -std=c17 -g -O1 -D_GNU_SOURCE -pthread -Wall -Wextra -Werror -I. -Icommon -Ibuild/gen \
    $cflags -o "$build/fuzz-seeds/gen_seeds" tests/fuzz/gen_seeds.c \
    $(ls "$build"/libppm_*.a) "$build/libppm.a" $libs -lm
for h in fuzz_proto fuzz_rpc fuzz_jwt fuzz_gateway fuzz_env_money fuzz_events fuzz_metering_snap; do
    mkdir -p "tests/fuzz/corpus/$h"
    rm -f "tests/fuzz/corpus/$h"/seed_*
done
"$build/fuzz-seeds/gen_seeds" tests/fuzz/corpus
for h in fuzz_proto fuzz_rpc fuzz_jwt fuzz_gateway fuzz_env_money fuzz_events fuzz_metering_snap; do
    echo "gen-seeds: $h: $(find "tests/fuzz/corpus/$h" -type f | wc -l) files"
done
