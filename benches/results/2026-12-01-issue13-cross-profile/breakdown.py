import sys, re, collections
TASKS = [
  ('publish_task', 'signaling_redis::cluster::publish_task'),
  ('receive_task', 'signaling_redis::cluster::receive_task'),
  ('redis connection task', 'redis::aio::multiplexed_connection'),
  ('ws connection tasks', 'signaling_ws::serve_with'),
  ('ws connection tasks', 'signaling_core::driver::connection'),
]
SUB = {
 'redis connection task': [
   ('push → bus queue (Forward)', r'signaling_redis::bus::Forward|AsyncPushSender'),
   ('socket recv', r'recvfrom|recvmsg|sys_read|tcp_recv'),
   ('socket send', r'sendto|sendmsg|sys_write|tcp_send'),
   ('RESP parse (combine)', r'combine::|redis::parser'),
   ('RESP value → push/reply', r'PushInfo|send_result'),
   ('memcpy/alloc', r'memmove|memcpy|_rjem|rallocx'),
   ('reply → waiting pipeline', r'send_result|oneshot'),
 ],
 'publish_task': [
   ('Envelope::encode (JSON)', r'Envelope::encode'),
   ('frame() copy', r'signaling_redis::cluster::frame'),
   ('redis pipeline build (cmd/args/RESP encode)', r'redis::cmd|redis::pipeline|write_command|write_pipeline|Pipeline::|Cmd::|ToRedisArgs|ToSingleRedisArg'),
   ('hand to connection (mpsc send/wake)', r'multiplexed_connection|mpsc|wake'),
   ('drop envelopes/batch', r'drop_in_place'),
   ('owner cache (HashMap)', r'hashbrown|HashMap|HashSet|BuildHasher|sip'),
   ('queue recv_many', r'recv_many'),
 ],
 'receive_task': [
   ('Envelope::decode (JSON)', r'Envelope::decode'),
   ('hub: router.handle_remote', r'handle_remote'),
   ('hub: dispatch/outbox', r'Hub::dispatch|outbox'),
   ('hub: lock/other', r'ClusterLink::deliver|cluster_input_each'),
   ('held lock (HashMap)', r'hashbrown|HashMap'),
   ('bus recv', r'BusReceiver|mpsc'),
   ('drop', r'drop_in_place'),
 ],
 'ws connection tasks': [
   ('router.handle_text (parse+rules)', r'handle_text|Router::'),
   ('dispatch → backend.forward', r'RedisCluster.*forward|ClusterBackend'),
   ('dispatch/outbox', r'Hub::dispatch|outbox|Outbox'),
   ('socket recv', r'recvfrom|recvmsg|sys_read|tcp_recv'),
   ('socket send', r'sendto|sendmsg|sys_write|tcp_send'),
   ('ws frame codec', r'tungstenite'),
 ],
}
ctask = collections.Counter(); both = collections.Counter(); total=0
def flush(frames):
    global total
    if not frames: return
    total += 1
    task = 'other (scheduler, idle, timers)'
    for name, pat in TASKS:
        if any(pat in f for f in frames): task = name; break
    cat = 'rest'
    for name, pat in SUB.get(task, []):
        r = re.compile(pat)
        if any(r.search(f) for f in frames): cat = name; break
    ctask[task]+=1; both[(task,cat)]+=1
frames=[]
for line in sys.stdin:
    if not line.strip():
        flush(frames); frames=[]; continue
    if line[0] in ' \t':
        parts=line.strip().split(' ',1)
        if len(parts)>1: frames.append(parts[1])
    else:
        flush(frames); frames=[]
flush(frames)
print(f"samples {total}")
for t,v in ctask.most_common():
    print(f"{100*v/total:6.1f}%  {t}")
    for (tt,c),w in sorted(both.items(), key=lambda x:-x[1]):
        if tt==t and 100*w/total>=0.3: print(f"        {100*w/total:6.1f}%  {c}")
