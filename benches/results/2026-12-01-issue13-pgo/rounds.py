import json,glob,sys,re,collections
d=sys.argv[1]; case=sys.argv[2] if len(sys.argv)>2 else 'relay_max'
rows=collections.defaultdict(dict)
for f in glob.glob(d+'/raw/r*-*.jsonl'):
    r,t=re.match(r'.*/r(\d+)-(.*)\.jsonl',f).groups()
    for l in open(f):
        j=json.loads(l)
        if j.get('case')==case and 'msgs_per_s' in j:
            rows[int(r)][t]=(j['msgs_per_s'],j['server_cpu_us_per_msg']['total'],j.get('steal_pct_each',[None])[0],j.get('server_cpu_pct'))
ts=sorted({t for r in rows.values() for t in r})
for r in sorted(rows):
    print(r,'  '.join(f"{t}:{v[0]/1000:.0f}k {v[1]:.2f}us st{v[2]} cpu{v[3]}" for t,v in sorted(rows[r].items())))
def ratio(a,b):
    out=[]
    for r in sorted(rows):
        if a in rows[r] and b in rows[r]:
            out.append((rows[r][a][0]/rows[r][b][0], rows[r][b][1]/rows[r][a][1], max(rows[r][a][2] or 0, rows[r][b][2] or 0)))
    return out
for a,b in [('ws_server','ceiling'),('basic_server','ceiling'),('ws_server_pgo','ceiling_pgo'),('basic_server_pgo','ceiling_pgo'),('ws_server_pgo','ws_server'),('ceiling_pgo','ceiling')]:
    rs=ratio(a,b)
    print(a,'/',b,' '.join(f"{x:.2f}/{y:.2f}(st{s:.0f})" for x,y,s in rs))
