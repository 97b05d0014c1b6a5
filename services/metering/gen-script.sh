#!/usr/bin/env bash
# Regenerates metering_script.c from metering.lua (the Lua is the source;
# the C file embeds it as one string). Run after editing metering.lua; the
# unit test test_metering_model checks that both agree.
set -euo pipefail
cd "$(dirname "$0")"
python3 - <<'PY'
src = open("metering.lua").read()
out = ['/*  metering_script: generated from metering.lua by gen-script.sh; do not',
       '    edit. The session transitions, run by EVALSHA (metering_store). */',
       '#include "metering_script.h"', '', 'const char metering_script_lua[] =']
for line in src.splitlines(True):
    esc = line.replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')
    out.append('    "' + esc + '"')
out[-1] += ';'
open("metering_script.c", "w").write("\n".join(out) + "\n")
PY
