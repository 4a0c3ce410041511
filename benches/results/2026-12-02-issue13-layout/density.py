import sys,re,collections,bisect
# density.py OUT MESSAGES ADDRS [N]: per function: hot lines (>= once/msg), hot instruction bytes, density
f,n,addrf=sys.argv[1],int(sys.argv[2]),sys.argv[3]
addrs=[int(l,16) for l in open(addrf)]
size={}
for i in range(len(addrs)-1): size[addrs[i]]=addrs[i+1]-addrs[i]
names={}; cost=collections.Counter(); owner={}
addr=0; skip=False; fn=None
def parse(tok,cur):
    if tok=='*': return cur
    if tok.startswith('0x'): return int(tok,16)
    if tok[0] in '+-': return cur+int(tok)
    return int(tok)
for line in open(f,errors='replace'):
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
        try: cost[a]+=int(parts[2]); owner[a]=fn
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
print(f"hot lines {len(alll)} ({len(alll)*64/1024:.1f} KiB), hot bytes {tb} ({tb/1024:.1f} KiB), density {tb/len(alll)/64:.2f}")
short=lambda s: re.sub(r'::h[0-9a-f]{16}$','',s)[-100:]
rows=sorted(hotlines, key=lambda k:-len(hotlines[k]))
for k in rows[:int(sys.argv[4]) if len(sys.argv)>4 else 50]:
    print(f"{len(hotlines[k]):4d} {hotbytes[k]:6d} {hotbytes[k]/len(hotlines[k])/64:5.2f}  {short(names.get(k,k))}")
