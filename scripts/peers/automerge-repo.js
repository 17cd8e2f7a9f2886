// automerge-repo at the village (NodeFS storage, WebSocket client adapter) syncing to an
// automerge-repo sync server (NodeFS storage, WebSocket server adapter) at the county, over the
// byte-counting relay; one document per case. sync-new, sync-idle, sync-1pct on the cases of
// yiciban-bench.
//   node scripts/peers/automerge-repo.js [--quick] [--runs R] [--sizes 1000,10000] [--workload PATTERN]
// Prints one JSON line per figure on stdout; progress on stderr. Run from the repository root.
// The county, the village and the relay are separate processes (this file forked with a role).
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { fork } = require('node:child_process');
const c = require('./common');

const VERSION = JSON.parse(fs.readFileSync(path.join(__dirname, 'node_modules/@automerge/automerge-repo/package.json'), 'utf8')).version;
const PEER = `automerge-repo ${VERSION} (WebSocket, NodeFS)`;

async function libs() {
  const { Repo } = await import('@automerge/automerge-repo');
  const { WebSocketClientAdapter, WebSocketServerAdapter } = await import('@automerge/automerge-repo-network-websocket');
  const { NodeFSStorageAdapter } = await import('@automerge/automerge-repo-storage-nodefs');
  return { Repo, WebSocketClientAdapter, WebSocketServerAdapter, NodeFSStorageAdapter };
}

// The county: a sync server as automerge-repo's own sync-server example sets it up.
async function server(dir) {
  const { Repo, WebSocketServerAdapter, NodeFSStorageAdapter } = await libs();
  const { WebSocketServer } = require('ws');
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await new Promise((r) => wss.on('listening', r));
  const repo = new Repo({
    network: [new WebSocketServerAdapter(wss)],
    storage: new NodeFSStorageAdapter(dir),
    sharePolicy: async () => false,
  });
  process.on('message', async (m) => {
    if (m === 'count') {
      let docs = 0;
      let events = 0;
      const states = {};
      for (const h of Object.values(repo.handles)) {
        if (process.env.PEER_DEBUG) states[h.state] = (states[h.state] || 0) + 1;
        if (!h.isReady()) continue;
        const d = h.doc();
        if (d && d.events) { docs += 1; events += d.events.length; }
      }
      process.send({ docs, events, states });
    } else if (m === 'flush') {
      await repo.flush();
      process.send({ flushed: true });
    }
  });
  process.send({ port: wss.address().port });
}

// Ends a village process without cutting off a write of automerge-repo's. Every change also
// schedules the Repo's own save (throttled, 100 ms), which runs beside `flush()`'s and writes the
// same chunk file; `flush()` does not wait for it, and `process.exit()` right after `shutdown()`
// killed it between opening the file (truncating it) and writing it. The document was then stored
// as an empty snapshot: the village loaded it as a ready document with no heads, announced it
// empty, the county marked it "requesting" and it never arrived (seen at 200 and 1,000 documents).
// So the process ends on its own, when the last write has finished.
async function settle(repo) {
  await repo.flush();
  await repo.shutdown();
  if (process.connected) process.disconnect();
}

// The village. `create`: file the cases offline, one document each; `comment`: one comment on
// every 100th case, offline; `sync`: open every case document with the network on and stay up.
async function village(action, dir, urlFile, extra) {
  const { Repo, WebSocketClientAdapter, NodeFSStorageAdapter } = await libs();
  const repo = new Repo({ network: [], storage: new NodeFSStorageAdapter(dir) });
  if (action === 'create') {
    const [pattern, seed, n] = JSON.parse(extra);
    const urls = c.loadCases(pattern, seed, n).map((x) => repo.create(x).url);
    fs.writeFileSync(urlFile, JSON.stringify(urls));
    await settle(repo);
    return;
  }
  const urls = JSON.parse(fs.readFileSync(urlFile, 'utf8'));
  if (action === 'comment') {
    const [pattern, seed, n] = JSON.parse(extra);
    const cases = c.loadCases(pattern, seed, n);
    for (let i = 0; i < urls.length; i += 100) {
      const h = await repo.find(urls[i]);
      h.change((d) => { d.events.push(c.commentOf(cases[i])); });
    }
    await settle(repo);
    return;
  }
  // Every document is loaded from storage before the network comes up, so the link carries
  // sync only. (A document announced with no heads, which the county then marks "requesting"
  // and never gets, was not a loading race: it was an empty snapshot file; see settle().)
  await Promise.all(urls.map((u) => repo.find(u)));
  repo.networkSubsystem.addNetworkAdapter(new WebSocketClientAdapter(`ws://127.0.0.1:${extra}`, 100));
  process.once('message', async (m) => { if (m === 'stop') await settle(repo); });
  process.send({ ready: true });
}

// How long to wait for the documents to arrive: 120 s, or 30 ms a document beyond that (the
// clock includes the village process loading every document: several seconds of the 12–23 s
// for 1,000 on a busy 2-core machine).
function limitMs(n) {
  return Math.max(120000, 30 * n);
}

function child(args) {
  const p = fork(__filename, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const exited = new Promise((r) => p.once('exit', r));
  const ask = (m) => new Promise((resolve) => { p.once('message', resolve); p.send(m); });
  const next = () => new Promise((resolve, reject) => {
    p.once('message', resolve);
    p.once('exit', (code) => reject(new Error(`${args[0]} exited ${code}`)));
  });
  const kill = async () => { p.kill('SIGKILL'); await exited; };
  // A village ends as a village would: the Repo shuts down (the link closes, the store is
  // flushed) and the process exits once its writes are done; killed if that takes over 30 s.
  const stop = async () => {
    if (p.exitCode !== null || p.signalCode !== null || !p.connected) return kill();
    p.send('stop');
    const timer = setTimeout(() => p.kill('SIGKILL'), 30000);
    await exited;
    clearTimeout(timer);
  };
  return { p, exited, ask, next, kill, stop };
}

async function run(n, seed, args) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'peer-automerge-'));
  const cases = c.loadCases(args.workload, seed, n);
  const countyDir = path.join(dir, 'county');
  const villageDir = path.join(dir, 'village');
  const urlFile = path.join(dir, 'urls.json');
  const work = JSON.stringify([args.workload, seed, n]);
  const county = child(['server', countyDir]);
  let relay;
  let v;
  try {
    const { port } = await county.next();
    if (process.env.PEER_DEBUG) console.error('county up', port);
    relay = await c.startRelay(`127.0.0.1:${port}`);
    // The clerk files the cases while the link is down (not measured).
    const mk = child(['village', 'create', villageDir, urlFile, work]);
    if ((await mk.exited) !== 0) throw new Error('creating the documents failed');
    if (process.env.PEER_DEBUG) console.error('created');
    const counted = async (docs, events) => {
      const k = await county.ask('count');
      if (process.env.PEER_DEBUG) console.error('count', JSON.stringify(k), await relay.bytes());
      return k.docs >= docs && k.events >= events;
    };

    let before = await relay.bytes();
    let t = performance.now();
    v = child(['village', 'sync', villageDir, urlFile, String(relay.port)]);
    await c.waitFor('sync-new', limitMs(n), () => counted(n, n), 100);
    await county.ask('flush');
    const newSecs = (performance.now() - t) / 1000;
    await c.sleep(500);
    const newBytes = (await relay.bytes()) - before;
    await v.stop();

    // Idle: the village restarts with nothing new; bytes until the link is quiet for 1 s.
    await c.sleep(500);
    before = await relay.bytes();
    t = Date.now();
    v = child(['village', 'sync', villageDir, urlFile, String(relay.port)]);
    await v.next();
    const last = await c.quiescent(relay, 1000);
    const idleSecs = (last - t) / 1000;
    const idleBytes = (await relay.bytes()) - before;
    await v.stop();

    // 1%: every 100th case gets one comment while the village is offline, then it reconnects.
    const touched = Math.ceil(n / 100);
    const cm = child(['village', 'comment', villageDir, urlFile, work]);
    if ((await cm.exited) !== 0) throw new Error('commenting failed');
    before = await relay.bytes();
    t = performance.now();
    v = child(['village', 'sync', villageDir, urlFile, String(relay.port)]);
    await c.waitFor('sync-1pct', limitMs(n), () => counted(n, n + touched), 100);
    await county.ask('flush');
    const pctSecs = (performance.now() - t) / 1000;
    await c.sleep(500);
    const pctBytes = (await relay.bytes()) - before;
    return { newSecs, newBytes, idleSecs, idleBytes, pctSecs, pctBytes, jsonBytes: c.jsonBytes(cases) };
  } finally {
    if (v) await v.kill();
    if (relay) relay.close();
    await county.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main() {
  const argv = process.argv.slice(2);
  if (argv[0] === 'server') return server(argv[1]);
  if (argv[0] === 'village') return village(argv[1], argv[2], argv[3], argv[4]);
  const args = c.parseArgs(argv);
  // The full run stops at 1,000 documents unless --sizes asks for more: at 10,000, creating
  // the documents (untimed) took 7 minutes here and the village was still loading them from
  // NodeFS after the 300 s limit (58% of its time in garbage collection), so it never dialled.
  if (!argv.includes('--sizes')) args.sizes = args.sizes.filter((n) => n <= 1000);
  for (const n of args.sizes) {
    const runs = [];
    try {
      for (let r = 0; r < args.runs; r++) {
        const x = await run(n, r + 1, args);
        console.error(`automerge-repo cases=${n} run ${r + 1}: ${JSON.stringify(x)}`);
        runs.push(x);
      }
    } catch (e) {
      console.error(`automerge-repo cases=${n}: failed: ${e.stack || e}`);
      console.log(JSON.stringify({ id: 'sync', peer: PEER, parameters: { cases: n }, error: String(e.message || e) }));
      continue;
    }
    const R = args.runs;
    const extra = { json_bytes: runs[0].jsonBytes };
    c.emit(PEER, 'sync-new.secs', n, R, 's', runs.map((x) => x.newSecs));
    c.emit(PEER, 'sync-new.bytes', n, R, 'bytes', runs.map((x) => x.newBytes), extra);
    c.emit(PEER, 'sync-idle.bytes', n, R, 'bytes', runs.map((x) => x.idleBytes));
    c.emit(PEER, 'sync-idle.secs', n, R, 's', runs.map((x) => x.idleSecs));
    c.emit(PEER, 'sync-1pct.secs', n, R, 's', runs.map((x) => x.pctSecs));
    c.emit(PEER, 'sync-1pct.bytes', n, R, 'bytes', runs.map((x) => x.pctBytes));
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
