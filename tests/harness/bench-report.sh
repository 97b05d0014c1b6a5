#!/usr/bin/env bash
# Writes docs/BENCHMARKS.md (to stdout) from the lines run-bench.sh
# collected in BUILD/bench-results.txt:
#
#   machine|<key>|<value>[|<value>]  cores, memory, cpu, kernel, date, commit,
#                                build, others_before (cores|niced cores),
#                                duration
#   bench|<name>|<seconds>|<exit status>|<cores other work kept busy>|<of them niced>|<load before>|<load after>
#   result|<id>|<what>|<figure>|<baseline>|<ratio>|<aim>|<met>   (tests/lib/ppm_bench.h)
#   note|<area>|<text>
#   gap|<id>|<text>
#
# A bench line comes before the lines of that benchmark. One table per area
# (the id's first part), in a fixed order, with its "how measured" note, the
# machine's load while it ran, and for every missed aim what the figures
# show; benchmarks that failed are listed first.
#
#   tests/harness/bench-report.sh RESULTS > docs/BENCHMARKS.md
set -euo pipefail
[ -f "${1:-}" ] || { echo "usage: bench-report.sh RESULTS" >&2; exit 2; }
awk -F'|' '
function area_of(id) { return index(id, ".") ? substr(id, 1, index(id, ".") - 1) : id }
function fmt(v) { return v == "" ? "-" : v }
# Other work: "busy" when it held at least a quarter of a core at normal
# priority; "niced" when only work at lowered priority (which gives way to
# the benchmarks) did; else "quiet".
function load_kind(all, niced) { return all - niced >= 0.25 ? "busy" : all >= 0.25 ? "niced" : "quiet" }
function others_text(all, niced) {
    return sprintf("%s of %s cores busy on average%s", all, M["cores"],
                   niced + 0 > 0 ? sprintf(" (%s of them at lowered priority)", niced) : "")
}
function machine_line(b,    k) {
    k = load_kind(bothers[b], bniced[b])
    return sprintf("`%s` ran %s s; other work kept %s (load average %s before, %s after): %s",
                   b, bsecs[b], others_text(bothers[b], bniced[b]), bload0[b], bload1[b],
                   k == "busy" ? "busy" : k == "niced" ? "busy only with work at lowered priority, which gives way to the benchmark" : "otherwise quiet")
}
function cap(s) { return toupper(substr(s, 1, 1)) substr(s, 2) }
BEGIN {
    order = "rpc quote metering payment gateway e2e"
    n_order = split(order, fixed, " ")
    title["rpc"] = "ppm_rpc over ZeroMQ (common/, issue 2)"
    title["quote"] = "Rate quote over ZeroMQ"
    title["metering"] = "Metering"
    title["payment"] = "Payment"
    title["gateway"] = "Gateway"
    title["e2e"] = "End to end: the whole stack through the gateway"
    current = ""
}
$1 == "machine" { M[$2] = $3; if ($2 == "others_before") M["niced_before"] = $4; next }
$1 == "bench" {
    current = $2; benches[++n_benches] = current
    bsecs[current] = $3; brc[current] = $4; bothers[current] = $5; bniced[current] = $6
    bload0[current] = $7; bload1[current] = $8
    next
}
$1 == "result" {
    a = area_of($2)
    if (!(a in seen_area)) { seen_area[a] = 1; areas[++n_areas] = a }
    if (!((a, current) in area_bench)) { area_bench[a, current] = 1; abench[a] = abench[a] (abench[a] == "" ? "" : " ") current }
    k = ++n_results[a]
    rid[a, k] = $2; rwhat[a, k] = $3; rfig[a, k] = $4; rbase[a, k] = $5; rratio[a, k] = $6
    raim[a, k] = $7; rmet[a, k] = $8; rbench[a, k] = current
    if ($8 == "yes") { met[a]++; met_all++ }
    if ($8 == "no") { missed[a]++; missed_all++ }
    next
}
$1 == "note" {
    a = $2
    if (!(a in seen_area)) { seen_area[a] = 1; areas[++n_areas] = a }
    note[a] = note[a] (note[a] == "" ? "" : " ") $3
    next
}
$1 == "gap" { gap[$2] = gap[$2] (gap[$2] == "" ? "" : "; ") $3; next }
END {
    print "# Benchmarks"
    print ""
    print "Written by `make bench` (tests/harness/run-bench.sh, tests/harness/bench-report.sh) from the"
    print "figures of one run: do not edit by hand, run `make bench` again. Every figure is printed next"
    print "to a baseline measured in the same run on the same machine (SPEC §7); the benchmarks, the"
    print "result-line format and how to run one alone are described in tests/bench/README.md."
    print ""
    print "| machine | |"
    print "|---|---|"
    printf "| CPU | %s, %s cores |\n", M["cpu"], M["cores"]
    printf "| memory | %s |\n", M["memory"]
    printf "| kernel | %s |\n", M["kernel"]
    printf "| date | %s |\n", M["date"]
    printf "| commit | %s |\n", M["commit"]
    printf "| build | `%s` |\n", M["build"]
    printf "| run time | %d min %d s |\n", int(M["duration"] / 60), M["duration"] % 60
    printf "| other work before the run | %s (sampled for 3 s) |\n", others_text(M["others_before"], M["niced_before"])
    print ""
    k = load_kind(M["others_before"], M["niced_before"])
    if (k == "busy")
        print "**The machine was busy with other work when this run started**, so figures that compete for the CPU may be worse than the code can do; each area below says how busy it was while its benchmark ran."
    else if (k == "niced")
        print "**Other work ran on the machine at lowered priority** (nice) when this run started: it gives way to the benchmarks, but shares their caches and cores; each area below says how busy it was while its benchmark ran."
    else
        print "The machine was otherwise quiet when this run started; each area below says how busy it was while its benchmark ran."
    print ""
    # summary
    print "## Summary"
    print ""
    printf "%d of %d aims met.\n\n", met_all, met_all + missed_all
    print "| area | aims met | missed | benchmark | other work while it ran (cores) |"
    print "|---|---|---|---|---|"
    n_list = 0
    for (i = 1; i <= n_order; i++) if (fixed[i] in seen_area) list[++n_list] = fixed[i]
    for (i = 1; i <= n_areas; i++) {
        known = 0
        for (j = 1; j <= n_order; j++) if (areas[i] == fixed[j]) known = 1
        if (!known) list[++n_list] = areas[i]
    }
    for (i = 1; i <= n_list; i++) {
        a = list[i]
        nb = split(abench[a], bs, " ")
        o = ""
        for (j = 1; j <= nb; j++) o = o (o == "" ? "" : ", ") bothers[bs[j]] (bniced[bs[j]] + 0 > 0 ? " (" bniced[bs[j]] " niced)" : "")
        printf "| [%s](#%s) | %d | %d | %s | %s |\n", (a in title) ? title[a] : a, a, met[a] + 0, missed[a] + 0, abench[a], o
    }
    print ""
    nf = 0
    for (i = 1; i <= n_benches; i++) if (brc[benches[i]] != 0) nf++
    if (nf) {
        print "**Benchmarks that failed** (their figures below, if any, are incomplete):"
        print ""
        for (i = 1; i <= n_benches; i++) {
            b = benches[i]
            if (brc[b] != 0)
                printf "- `%s`: exit status %s%s after %s s\n", b, brc[b], brc[b] == 124 ? " (timed out)" : "", bsecs[b]
        }
        print ""
    }
    for (i = 1; i <= n_list; i++) {
        a = list[i]
        printf "<a id=\"%s\"></a>\n\n## %s\n\n", a, (a in title) ? title[a] : a
        if (n_results[a]) {
            print "| figure | value | baseline | ratio | aim | met |"
            print "|---|---|---|---|---|---|"
            for (k = 1; k <= n_results[a]; k++) {
                m = rmet[a, k] == "yes" ? "yes" : rmet[a, k] == "no" ? "**no**" : "-"
                printf "| %s | %s | %s | %s | %s | %s |\n", rwhat[a, k], fmt(rfig[a, k]), fmt(rbase[a, k]), fmt(rratio[a, k]), fmt(raim[a, k]), m
            }
            print ""
        } else {
            print "No figures: the benchmark did not get as far as printing one."
            print ""
        }
        if (a in note) printf "**How measured.** %s\n\n", note[a]
        nb = split(abench[a], bs, " ")
        for (j = 1; j <= nb; j++) {
            printf "**The machine meanwhile.** %s.\n\n", machine_line(bs[j])
        }
        if (missed[a]) {
            print "**Missed aims.**"
            print ""
            for (k = 1; k <= n_results[a]; k++) {
                if (rmet[a, k] != "no") continue
                b = rbench[a, k]
                s = sprintf("- %s: %s against the aim %s", rwhat[a, k], fmt(rfig[a, k]), fmt(raim[a, k]))
                if (rbase[a, k] != "" && rbase[a, k] != "-") s = s sprintf(" (baseline %s, ratio %s)", rbase[a, k], fmt(rratio[a, k]))
                s = s "."
                if (rid[a, k] in gap) {
                    g = cap(gap[rid[a, k]])
                    s = s " " g (g ~ /[.!?]$/ ? "" : ".")
                }
                kind = load_kind(bothers[b], bniced[b])
                if (raim[a, k] == "0")
                    s = s " Failures are the code'"'"'s however busy the machine was: a slow machine only makes those that depend on timing likelier."
                else if (kind == "busy")
                    s = s sprintf(" Other work kept %s while it ran, so part of the gap may be the machine rather than the code: run `make bench` again on a quiet machine before drawing conclusions.", others_text(bothers[b], bniced[b]))
                else if (kind == "niced")
                    s = s sprintf(" Other work kept %s while it ran, but at lowered priority: it gives way to the benchmark, so most of the gap is likely the code'"'"'s; a run on a quiet machine settles it.", others_text(bothers[b], bniced[b]))
                else
                    s = s sprintf(" The machine was otherwise quiet (%s), so the gap is the code'"'"'s.", others_text(bothers[b], bniced[b]))
                print s
            }
            print ""
        }
    }
}
' "$1"
