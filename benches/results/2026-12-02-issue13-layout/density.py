import sys,re,collections,bisect
# density.py OUT MESSAGES ADDRS [N]: per function: hot lines (>= once/msg), hot instruction bytes,
# density, and simulated I1 misses per message (a --cache-sim=yes --dump-instr=yes profile)
f,n,addrf=sys.argv[1],int(sys.argv[2]),sys.argv[3]
addrs=[int(l,16) for l in open(addrf)]
size={}
for i in range(len(addrs)-1): size[addrs[i]]=addrs[i+1]-addrs[i]
names={}; cost=collections.Counter(); owner={}; miss=collections.Counter()
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
            cost[a]+=int(parts[2]); owner[a]=fn
            if ev and 'I1mr' in ev and len(parts)>ev.index('I1mr')+2:
                miss[fn]+=int(parts[ev.index('I1mr')+2])
        except ValueError: pass
hotlines=collections.defaultdict(set); hotbytes=collections.Counter(); warm=collections.defaultdict(set)
for a,c in cost.items():
    fn_=owner[a]
    if c>=n:
        hotbytes[fn_]+=size.get(a,4)
        for b in range(a, a+size.get(a,4)): hotlines[fn_].add(b//64)
alll=set(); 
for s in hotlines.values(): alll|=s
tb=sum(hotbytes.values())
print(f"hot lines {len(alll)} ({len(alll)*64/1024:.1f} KiB), hot bytes {tb} ({tb/1024:.1f} KiB), density {tb/len(alll)/64:.2f}, I1 misses/msg {sum(miss.values())/n:.1f}")
print("lines  bytes density misses/msg  function")
short=lambda s: re.sub(r'::h[0-9a-f]{16}$','',s)[-100:]
rows=sorted(hotlines, key=lambda k:-len(hotlines[k]))
for k in rows[:int(sys.argv[4]) if len(sys.argv)>4 else 50]:
    print(f"{len(hotlines[k]):5d} {hotbytes[k]:6d} {hotbytes[k]/len(hotlines[k])/64:7.2f} {miss[k]/n:10.2f}  {short(names.get(k,k))}")
