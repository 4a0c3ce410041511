"""pairs.py FILE BASE NEW [CEILING]: medians of an ab.sh run (CPU per message, total and user),
and NEW/BASE per round (the paired ratio), from the lines ab.sh prints."""
import re
import statistics as st
import sys

f, base, new = sys.argv[1:4]
ceil = sys.argv[4] if len(sys.argv) > 4 else None
rows = {}
for line in open(f):
    p = line.split()
    if len(p) < 15 or not p[0].isdigit():
        continue
    steal = float(re.search(r"\[([\d.]+),", line).group(1))
    user = float(p[14]) if p[13] == "user" else float("nan")  # older runs: total only
    rows[(int(p[0]), p[1])] = (float(p[2]), float(p[12]), user, steal)
for label in filter(None, [base, new, ceil]):
    r = [v for (_, l), v in rows.items() if l == label]
    print(f"{label:6} rounds {len(r)}  msgs/s {st.median(v[0] for v in r):9,.0f}  "
          f"CPU/msg {st.median(v[1] for v in r):.3f} us  user {st.median(v[2] for v in r):.3f} us")
ratios = [rows[(n, new)][1] / rows[(n, base)][1] for (n, l) in rows if l == base and (n, new) in rows]
print(f"{new}/{base} CPU per message, per round: " + " ".join(f"{x:.3f}" for x in ratios)
      + f"  median {st.median(ratios):.3f}, better in {sum(x < 1 for x in ratios)} of {len(ratios)}")
if ceil:
    c = st.median(v[1] for (_, l), v in rows.items() if l == ceil)
    for label in (base, new):
        m = st.median(v[1] for (_, l), v in rows.items() if l == label)
        t = st.median(v[0] for (_, l), v in rows.items() if l == label)
        ct = st.median(v[0] for (_, l), v in rows.items() if l == ceil)
        print(f"{label}: ceiling's CPU/msg / its {c / m:.3f}, throughput / ceiling's {t / ct:.3f}")
