#!/usr/bin/env bash
# Replays every committed fuzz corpus under AddressSanitizer and
# UndefinedBehaviorSanitizer, without libFuzzer, so `make test` catches a
# regression on any seed or past finding. Each tests/fuzz/fuzz_<name>.c is
# linked with tests/fuzz/replay_main.c (or, when it defines its own main
# under -DPPM_FUZZ_STANDALONE, with that) and the sanitizer build's
# libraries, then run on every file of tests/fuzz/corpus/fuzz_<name>/.
# It uses the same compiler as that build (cc), since ASan runtimes of gcc
# and clang do not mix; `make fuzz` is the clang/libFuzzer side.
#
#   tests/harness/replay-fuzz.sh [BUILD]   (default build/san)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
build=${1:-build/san}
out=$build/fuzz-replay
mkdir -p "$out"
pkgs="libczmq libzmq libprotobuf-c hiredis libpq libcurl libmicrohttpd jansson libsodium openssl"
# shellcheck disable=SC2086
cflags=$(pkg-config --cflags $pkgs)
# shellcheck disable=SC2086
libs=$(pkg-config --libs $pkgs)
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$root/tests/harness/lsan.supp}
status=0
for src in tests/fuzz/fuzz_*.c; do
    [ -e "$src" ] || continue
    name=$(basename "$src" .c)
    corpus=tests/fuzz/corpus/$name
    if ! compgen -G "$corpus/*" >/dev/null; then
        echo "replay-fuzz: $name has no seed corpus in $corpus" >&2
        status=1
        continue
    fi
    if grep -q PPM_FUZZ_STANDALONE "$src"; then
        extra=(-DPPM_FUZZ_STANDALONE)
    else
        extra=(tests/fuzz/replay_main.c)
    fi
    # shellcheck disable=SC2086
    ${CC:-cc} -std=c17 -g -O1 -D_GNU_SOURCE -pthread -fsanitize=address,undefined \
        -fno-sanitize-recover=all -fno-omit-frame-pointer -I. -Icommon -Ibuild/gen $cflags \
        -o "$out/$name" "$src" "${extra[@]}" $(ls "$build"/libppm_*.a 2>/dev/null) \
        "$build/libppm.a" $libs -lm
    if "$out/$name" "$corpus"/* >"$out/$name.log" 2>&1; then
        echo "replay-fuzz: $name: $(find "$corpus" -type f | wc -l) inputs ok"
    else
        echo "replay-fuzz: $name FAILED (log: $out/$name.log)" >&2
        tail -n 40 "$out/$name.log" >&2
        status=1
    fi
done
exit $status
