import sys,re,collections
# hotfn.py OUT MESSAGES [K]: hot 64-byte code lines (run >= once per K msgs) per function symbol,
# and I1 misses per message per function (needs --cache-sim=yes --dump-instr=yes)
f,n=sys.argv[1],int(sys.argv[2]); k=float(sys.argv[3]) if len(sys.argv)>3 else 1
names={}
cost=collections.Counter(); miss=collections.Counter(); owner={}
addr=0; skip=False; fn=None; ev=None
def parse(tok,cur):
    if tok=='*': return cur
    if tok.startswith('0x'): return int(tok,16)
    if tok[0] in '+-': return cur+int(tok)
    return int(tok)
for line in open(f,errors='replace'):
    if line.startswith('events:'):
        ev=line.split()[1:]
        continue
    if line.startswith('cfn='):
        m=re.match(r'cfn=\((\d+)\) (.*)',line.strip())
        if m: names[m.group(1)]=m.group(2)
        continue
    if line.startswith('fn='):
        m=re.match(r'fn=\((\d+)\)(?: (.*))?',line.strip())
        if m:
            if m.group(2): names[m.group(1)]=m.group(2)
            fn=m.group(1)
        continue
    if not line or line[0] not in '0123456789+-*':
        if line.startswith('calls='): skip=True
        continue
    parts=line.split()
    if len(parts)<2: continue
    a=parse(parts[0],addr); addr=a
    if skip: skip=False; continue
    if len(parts)>=3:
        try:
            c=int(parts[2]); cost[a]+=c; owner[a]=fn
            if ev and 'I1mr' in ev:
                i=ev.index('I1mr')+2
                if len(parts)>i: miss[fn]+=int(parts[i])
        except ValueError: pass
lines=collections.Counter(); lfn={}
for a,c in cost.items():
    lines[a//64]+=c; lfn.setdefault(a//64,owner[a])
hot=[l for l,c in lines.items() if c>=n/k]
byfn=collections.Counter(lfn[l] for l in hot)
nm=lambda i: names.get(i,i)
print(f"hot lines: {len(hot)} ({len(hot)*64/1024:.1f} KiB); I1 misses/msg {sum(miss.values())/n:.1f}")
short=lambda s: re.sub(r'::h[0-9a-f]{16}$','',s)[-110:]
for fn_,c in byfn.most_common(int(sys.argv[4]) if len(sys.argv)>4 else 60):
    print(f"{c:4d} {miss[fn_]/n:6.2f}  {short(nm(fn_))}")
