# scripts/bench.d/report.awk — turns scripts/bench's record file into the
# printed tables (mode=table) or the JSON document (mode=json).
#
# Record lines, tab-separated, in the order they were added:
#   M <key> <value>                      top-level fact (versions, settings)
#   T <workload> <title>                 a workload's title (its first line)
#   R <workload> <metric> <unit> <kiln> <buildah> <target text> <kiln max> <ratio max> <kiln samples> <buildah samples>
#   N <workload> <text>                  a note printed under the workload's table
# Empty value fields mean "not measured". The ratio is kiln/buildah; "met?" is
# yes when kiln <= <kiln max> and kiln/buildah <= <ratio max> (where given).
BEGIN { FS = "\t"; nw = 0; nm = 0 }

function isnum(v) { return v ~ /^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$/ }
function fmt(v, unit) {
  if (!isnum(v)) return (v == "" ? "n/a" : v)
  if (unit == "s") return (v < 10 ? sprintf("%.3f s", v) : sprintf("%.1f s", v))
  if (unit == "MB") return sprintf("%.1f MB", v)
  return sprintf("%g", v)
}
function jstr(s) {
  gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); gsub(/\t/, "\\t", s)
  return "\"" s "\""
}
function jnum(v) { return isnum(v) ? (v + 0 == int(v + 0) && v !~ /\./ ? v + 0 : sprintf("%.6g", v)) : "null" }
function jlist(s,   a, k, n, out) {
  n = split(s, a, / +/); out = ""
  for (k = 1; k <= n; k++) if (a[k] != "") out = out (out == "" ? "" : ", ") jnum(a[k])
  return "[" out "]"
}

$1 == "M" { nm++; mkey[nm] = $2; mval[nm] = $3; next }
$1 == "T" { if (!($2 in title)) { nw++; worder[nw] = $2 }; title[$2] = $3; next }
$1 == "N" { nn[$2]++; note[$2, nn[$2]] = $3; next }
$1 == "R" {
  w = $2; if (!(w in title)) { nw++; worder[nw] = w; title[w] = w }
  r = ++nr[w]
  metric[w, r] = $3; unit[w, r] = $4; kv[w, r] = $5; bv[w, r] = $6; tgt[w, r] = $7
  kmax[w, r] = $8; rmax[w, r] = $9; ks[w, r] = $10; bs[w, r] = $11
  ratio[w, r] = (isnum($5) && isnum($6) && $6 > 0) ? $5 / $6 : ""
  met[w, r] = ""
  if ($8 != "" || $9 != "") {
    if (!isnum($5)) met[w, r] = "no (not measured)"
    else {
      ok = 1
      if ($8 != "" && $5 > $8) ok = 0
      if ($9 != "") { if (ratio[w, r] == "") ok = -1; else if (ratio[w, r] > $9) ok = 0 }
      met[w, r] = ok == 1 ? "yes" : ok == 0 ? "NO" : "? (no buildah figure)"
    }
  }
  next
}

END {
  if (mode == "json") { json(); exit }
  for (i = 1; i <= nw; i++) {
    w = worder[i]
    h[1] = "metric"; h[2] = "kiln"; h[3] = "buildah"; h[4] = "kiln/buildah"; h[5] = "target"; h[6] = "met?"
    for (c = 1; c <= 6; c++) wd[c] = length(h[c])
    for (r = 1; r <= nr[w]; r++) {
      cell[r, 1] = metric[w, r]; cell[r, 2] = fmt(kv[w, r], unit[w, r]); cell[r, 3] = fmt(bv[w, r], unit[w, r])
      cell[r, 4] = ratio[w, r] == "" ? "-" : sprintf("%.3f", ratio[w, r])
      cell[r, 5] = tgt[w, r] == "" ? "-" : tgt[w, r]; cell[r, 6] = met[w, r] == "" ? "-" : met[w, r]
      for (c = 1; c <= 6; c++) if (length(cell[r, c]) > wd[c]) wd[c] = length(cell[r, c])
    }
    printf "\n== %s ==\n", title[w]
    line(h, 0); sep = ""
    for (c = 1; c <= 6; c++) sep = sep (c > 1 ? "-|-" : "") rep("-", wd[c])
    print sep
    for (r = 1; r <= nr[w]; r++) { for (c = 1; c <= 6; c++) row[c] = cell[r, c]; line(row, 1) }
    for (k = 1; k <= nn[w]; k++) printf "  * %s\n", note[w, k]
  }
}
function rep(ch, n,   s) { s = ""; while (n-- > 0) s = s ch; return s }
function line(a, right,   c, s) {
  s = ""
  for (c = 1; c <= 6; c++) {
    if (c > 1) s = s " | "
    # numbers right-aligned, words left-aligned
    s = s ((right && c >= 2 && c <= 4) ? sprintf("%" wd[c] "s", a[c]) : sprintf("%-" wd[c] "s", a[c]))
  }
  sub(/ +$/, "", s); print s
}
function json(   i, k, w, r, sepw, sepr) {
  printf "{\n"
  for (k = 1; k <= nm; k++) printf "  %s: %s,\n", jstr(mkey[k]), isnum(mval[k]) ? jnum(mval[k]) : jstr(mval[k])
  printf "  \"workloads\": [\n"
  for (i = 1; i <= nw; i++) {
    w = worder[i]
    printf "    {\n      \"id\": %s,\n      \"title\": %s,\n      \"metrics\": [\n", jstr(w), jstr(title[w])
    for (r = 1; r <= nr[w]; r++) {
      printf "        {\"metric\": %s, \"unit\": %s, \"kiln\": %s, \"buildah\": %s, \"kiln_over_buildah\": %s, \"target\": %s, \"met\": %s,\n",
        jstr(metric[w, r]), jstr(unit[w, r]), jnum(kv[w, r]), jnum(bv[w, r]),
        ratio[w, r] == "" ? "null" : sprintf("%.4f", ratio[w, r]),
        tgt[w, r] == "" ? "null" : jstr(tgt[w, r]),
        met[w, r] == "yes" ? "true" : met[w, r] == "NO" ? "false" : "null"
      printf "         \"samples\": {\"kiln\": %s, \"buildah\": %s}}%s\n", jlist(ks[w, r]), jlist(bs[w, r]), r < nr[w] ? "," : ""
    }
    printf "      ],\n      \"notes\": ["
    for (k = 1; k <= nn[w]; k++) printf "%s\n        %s", (k > 1 ? "," : ""), jstr(note[w, k])
    printf "%s]\n    }%s\n", nn[w] ? "\n      " : "", i < nw ? "," : ""
  }
  printf "  ]\n}\n"
}
