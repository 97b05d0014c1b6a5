# shellcheck shell=bash
# The machine-readable lines of tests/lib/ppm_bench.h for benchmark scripts
# (tests/bench/*.sh), so that scripts and C benchmarks print one format:
#
#   bench_result ID WHAT FIGURE BASELINE RATIO AIM MET
#       result|<id>|<what>|<figure>|<baseline>|<ratio>|<aim>|<met>
#       (an empty argument is printed as "-"; MET: yes, no or -)
#   bench_note AREA TEXT     note|<area>|<text>   (how it was measured)
#   bench_gap ID TEXT        gap|<id>|<text>      (what a missed aim shows)
#   bench_met EXPR           "yes" when the awk expression EXPR is true,
#                            else "no" (e.g. bench_met "$ratio >= 30")

bench_field_() { # text -> the text with '|' as '/', line breaks as spaces, empty as -
    local text=${1//|//}
    text=${text//$'\n'/ }
    printf '%s' "${text:--}"
}

bench_result() {
    local out=result f
    for f in "$1" "$2" "$3" "$4" "$5" "$6" "$7"; do out+="|$(bench_field_ "$f")"; done
    printf '%s\n' "$out"
}

bench_note() { printf 'note|%s|%s\n' "$(bench_field_ "$1")" "$(bench_field_ "$2")"; }
bench_gap() { printf 'gap|%s|%s\n' "$(bench_field_ "$1")" "$(bench_field_ "$2")"; }

bench_met() { awk "BEGIN { exit !($1) }" && echo yes || echo no; }
