// PouchDB (leveldb) at the village replicating to pouchdb-server (leveldb) at the county, over
// the byte-counting relay: sync-new, sync-idle, sync-1pct on the cases of yiciban-bench.
//   node scripts/peers/pouchdb.js [--quick] [--runs R] [--sizes 1000,10000] [--workload PATTERN]
// Prints one JSON line per figure on stdout; progress on stderr. Run from the repository root.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const net = require('node:net');
const { spawn } = require('node:child_process');
const PouchDB = require('pouchdb-node');
const c = require('./common');

const PEER = `PouchDB ${require('pouchdb-node/package.json').version} → pouchdb-server ${require('pouchdb-server/package.json').version}`;

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

async function http(method, url, body) {
  const r = await fetch(url, { method, headers: { 'content-type': 'application/json' }, body: body && JSON.stringify(body) });
  return { status: r.status, json: await r.json() };
}

async function run(n, seed, args) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'peer-pouchdb-'));
  const cases = c.loadCases(args.workload, seed, n);
  const port = await freePort();
  fs.mkdirSync(path.join(dir, 'county'));
  const server = spawn(process.execPath,
    [require.resolve('pouchdb-server/bin/pouchdb-server'), '--port', String(port), '--dir', path.join(dir, 'county'), '-n',
      '--config', path.join(dir, 'county', 'config.json')],
    { cwd: path.join(dir, 'county'), stdio: ['ignore', 'ignore', 'inherit'] });
  const direct = `http://127.0.0.1:${port}/cases`;
  let relay;
  let local;
  try {
    await c.waitFor('pouchdb-server up', 30000, async () => {
      try { return (await http('GET', `http://127.0.0.1:${port}/`)).status === 200; } catch { return false; }
    }, 100);
    await http('PUT', direct);
    relay = await c.startRelay(`127.0.0.1:${port}`);
    const remoteUrl = `http://127.0.0.1:${relay.port}/cases`;
    local = new PouchDB(path.join(dir, 'village'));
    // The clerk files the cases while the link is down (not measured).
    for (let i = 0; i < cases.length; i += 100) {
      await local.bulkDocs(cases.slice(i, i + 100).map((x) => ({ _id: x.id, ...x })));
    }
    // A village syncs both ways (PouchDB.sync = replicate.to + replicate.from), one shot.
    const sync = async () => {
      const remote = new PouchDB(remoteUrl);
      try { await PouchDB.sync(local, remote); } finally { await remote.close(); }
    };

    let before = await relay.bytes();
    let t = performance.now();
    await sync();
    const newSecs = (performance.now() - t) / 1000;
    const count = (await http('GET', direct)).json.doc_count;
    if (count !== n) throw new Error(`county holds ${count} of ${n}`);
    await c.sleep(500);
    const newBytes = (await relay.bytes()) - before;

    // Idle: reconnect with nothing new.
    before = await relay.bytes();
    t = performance.now();
    await sync();
    const idleSecs = (performance.now() - t) / 1000;
    await c.sleep(500);
    const idleBytes = (await relay.bytes()) - before;

    // 1%: every 100th case gets one comment while disconnected, then sync.
    const touched = cases.filter((_, i) => i % 100 === 0);
    for (const x of touched) {
      const doc = await local.get(x.id);
      doc.events.push(c.commentOf(x));
      await local.put(doc);
    }
    before = await relay.bytes();
    t = performance.now();
    await sync();
    const pctSecs = (performance.now() - t) / 1000;
    const got = await http('POST', `${direct}/_all_docs?include_docs=true`, { keys: touched.map((x) => x.id) });
    const short = got.json.rows.filter((r) => !r.doc || r.doc.events.length < 2).length;
    if (short) throw new Error(`${short} touched cases lack their comment at the county`);
    await c.sleep(500);
    const pctBytes = (await relay.bytes()) - before;
    return { newSecs, newBytes, idleSecs, idleBytes, pctSecs, pctBytes, jsonBytes: c.jsonBytes(cases) };
  } finally {
    if (local) await local.close().catch(() => {});
    if (relay) relay.close();
    server.kill();
    await new Promise((r) => (server.exitCode !== null ? r() : server.once('exit', r)));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main() {
  const args = c.parseArgs(process.argv.slice(2));
  for (const n of args.sizes) {
    const runs = [];
    try {
      for (let r = 0; r < args.runs; r++) {
        const x = await run(n, r + 1, args);
        console.error(`pouchdb cases=${n} run ${r + 1}: ${JSON.stringify(x)}`);
        runs.push(x);
      }
    } catch (e) {
      console.error(`pouchdb cases=${n}: failed: ${e.stack || e}`);
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
