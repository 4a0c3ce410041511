import json,sys,glob,os,statistics as st,collections
# cpurate.py RAWDIR [CASES...]: server CPU per relayed message (total, user) for each target and
# case of a bench.sh run (its raw/ folder): the median, the spread over the rounds ((max-min)/median),
# the ceiling's median over this one (ceiling_pgo for *_pgo targets), and each round as total/steal
# on the server's core (%). Default cases: relay_max, relay_rate_80000, relay_rate_160000.
d=sys.argv[1]; cases=sys.argv[2:] or ["relay_max","relay_rate_80000","relay_rate_160000"]
tab=collections.defaultdict(list)
for f in sorted(glob.glob(os.path.join(d,"r*-*.jsonl"))):
    r,t=os.path.basename(f)[:-6].split("-",1)
    for line in open(f):
        try: j=json.loads(line)
        except: continue
        if j.get("case") in cases and "server_cpu_us_per_msg" in j:
            c=j["server_cpu_us_per_msg"]
            tab[(j["case"],t)].append((r,c["total"],c["user"],j.get("msgs_per_s"),(j.get("steal_pct_each") or [None])[0]))
for case in cases:
    print(f"## {case}")
    ceil=None
    rows=[]
    for (c,t),v in sorted(tab.items()):
        if c!=case: continue
        tot=[x[1] for x in v]; us=[x[2] for x in v]
        m=st.median(tot)
        rows.append((t,m,st.median(us),(max(tot)-min(tot))/m, " ".join(f"{x[1]:.2f}/{x[4]}" for x in v), st.median([x[3] for x in v])))
    base={t:m for t,m,*_ in rows}
    for t,m,u,spread,per,rate in rows:
        ref=base.get("ceiling_pgo" if t.endswith("_pgo") else "ceiling")
        print(f"{t:20} total {m:.3f} user {u:.3f} spread {spread:.2f} ceil/this {ref/m if ref else 0:.3f} rate {rate:.0f}  rounds(total/steal0): {per}")
