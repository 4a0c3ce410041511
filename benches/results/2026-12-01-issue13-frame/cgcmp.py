import sys,re,subprocess,collections
def load(f, n):
    out=subprocess.run(["callgrind_annotate","--inclusive=yes","--threshold=100",f],capture_output=True,text=True).stdout
    d={}
    for line in out.splitlines():
        m=re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*?)\s\[(/work/\S+)\]$",line)
        if not m: continue
        name=re.sub(r"^.*?:","",m.group(2),count=1)
        name=re.sub(r"^\S*wt-\w+/","",name)
        d[name]=d.get(name,0)+int(m.group(1).replace(",",""))/n
    return d
a=load(sys.argv[1],int(sys.argv[2])); b=load(sys.argv[3],int(sys.argv[4]))
keys=set(a)|set(b)
rows=sorted(keys,key=lambda k:-abs(b.get(k,0)-a.get(k,0)))
for k in rows[:int(sys.argv[5]) if len(sys.argv)>5 else 40]:
    print("%7.0f %7.0f %+6.0f  %s"%(a.get(k,0),b.get(k,0),b.get(k,0)-a.get(k,0),k[:150]))
