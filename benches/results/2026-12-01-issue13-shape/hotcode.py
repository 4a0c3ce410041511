import sys,re,collections
# hotcode.py OUT MESSAGES : executed code footprint of a callgrind --dump-instr=yes profile:
# distinct 64-byte lines whose instructions ran at least once per K messages
f,n=sys.argv[1],int(sys.argv[2])
cost=collections.Counter()
addr=0; skip=False
def parse(tok,cur):
    if tok=='*': return cur
    if tok.startswith('0x'): return int(tok,16)
    if tok[0] in '+-': return cur+int(tok)
    return int(tok)
for line in open(f,errors='replace'):
    if not line or line[0] not in '0123456789+-*': 
        if line.startswith('calls='):
            skip=True
        continue
    parts=line.split()
    if len(parts)<2: continue
    a=parse(parts[0],addr); addr=a
    if skip:
        skip=False; continue
    if len(parts)>=3:
        try: cost[a]+=int(parts[2])
        except ValueError: pass
lines=collections.Counter()
for a,c in cost.items(): lines[a//64]+=c
for k in (1,10,100):
    hot=[l for l,c in lines.items() if c>=n/k]
    print(f"lines run >= once per {k} msgs: {len(hot)} ({len(hot)*64/1024:.1f} KiB)")
