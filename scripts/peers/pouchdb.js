// PouchDB (leveldb) at the village replicating to pouchdb-server (leveldb) at the county, over
// the byte-counting relay: sync-new, sync-idle, sync-1pct on the cases of yiciban-bench, each in
// two setups (parameters.setup): "replicate", a one-way PouchDB.replicate(village, county), and
// "sync", a two-way PouchDB.sync (push and pull), one shot per reconnection.
//   node scripts/peers/pouchdb.js [--quick] [--runs R] [--sizes 1000,10000] [--workload PATTERN]
// Prints one JSON line per figure on stdout; progress on stderr. Run from the repository root.
// RELAY_LOG=FILE has the relay write every HTTP request it carries (relay.js) and this script
// the start of each figure to FILE.
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

// How a village reconnects. Both are correct for moving a village's cases to the county:
// - replicate: one way, village → county (PouchDB.replicate(local, remote)). Nothing in this
//   benchmark flows from the county to a village, so this is the most favourable setup for it.
// - sync: both ways (PouchDB.sync = replicate.to + replicate.from, run side by side), as a
//   village that also takes the county's decisions back would run it.
const SETUPS = {
  replicate: (local, remote) => PouchDB.replicate(local, remote),
  sync: (local, remote) => PouchDB.sync(local, remote),
};

async function run(n, seed, args, setup) {
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
    // One reconnection, one shot. `secs` runs from before the village opens its handle on the
    // county (no TCP connection yet) until the replication resolves (for sync, both directions;
    // checkpoints written). `wall` ends earlier, when the county has everything: the response to
    // the _bulk_docs request that completes the `want` documents reached the village (the
    // county answers once it has stored them). The target's bulkDocs is the replicator's only
    // way to write there, so wrapping it on this handle sees every document the push moves.
    const mark = (label) => relay.mark(`${setup} cases=${n} seed=${seed} ${label}`);
    const reconnect = async (want) => {
      const t0 = performance.now();
      const remote = new PouchDB(remoteUrl);
      let written = 0;
      let had = null;
      const bulkDocs = remote.bulkDocs;
      remote.bulkDocs = async (req, opts) => {
        // The adapter may consume req.docs: take the ids first.
        const ids = req.docs.map((d) => d._id);
        const res = await bulkDocs(req, opts);
        const failed = new Set(res.filter((r) => r.error).map((r) => r.id));
        written += ids.filter((id) => !failed.has(id)).length;
        if (had === null && written >= want) had = performance.now();
        return res;
      };
      try { await SETUPS[setup](local, remote); } finally { await remote.close(); }
      const secs = (performance.now() - t0) / 1000;
      if (want > 0 && had === null) throw new Error(`${setup}: ${written} of ${want} documents written at the county`);
      return { secs, wall: want > 0 ? (had - t0) / 1000 : secs };
    };

    mark('sync-new');
    let before = await relay.bytes();
    const fresh = await reconnect(n);
    const count = (await http('GET', direct)).json.doc_count;
    if (count !== n) throw new Error(`county holds ${count} of ${n}`);
    await c.sleep(500);
    const newBytes = (await relay.bytes()) - before;

    // Idle: reconnect with nothing new. The county has everything from the start, so its
    // wall time is the reconnection's: until the village has found there is nothing to send.
    mark('sync-idle');
    before = await relay.bytes();
    const idle = await reconnect(0);
    await c.sleep(500);
    const idleBytes = (await relay.bytes()) - before;

    // 1%: every 100th case gets one comment while disconnected, then sync.
    const touched = cases.filter((_, i) => i % 100 === 0);
    for (const x of touched) {
      const doc = await local.get(x.id);
      doc.events.push(c.commentOf(x));
      await local.put(doc);
    }
    mark('sync-1pct');
    before = await relay.bytes();
    const pct = await reconnect(touched.length);
    const got = await http('POST', `${direct}/_all_docs?include_docs=true`, { keys: touched.map((x) => x.id) });
    const short = got.json.rows.filter((r) => !r.doc || r.doc.events.length < 2).length;
    if (short) throw new Error(`${short} touched cases lack their comment at the county`);
    await c.sleep(500);
    const pctBytes = (await relay.bytes()) - before;
    mark('end');
    return {
      newSecs: fresh.secs, newWall: fresh.wall, newBytes,
      idleSecs: idle.secs, idleBytes,
      pctSecs: pct.secs, pctWall: pct.wall, pctBytes,
      jsonBytes: c.jsonBytes(cases),
    };
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
    const runs = { replicate: [], sync: [] };
    const failed = {};
    // The setups take turns within each run (same seed, fresh stores each), so a slow spell of
    // this shared machine does not land on one setup only.
    for (let r = 0; r < args.runs; r++) {
      for (const setup of Object.keys(SETUPS)) {
        if (failed[setup]) continue;
        try {
          const x = await run(n, r + 1, args, setup);
          console.error(`pouchdb ${setup} cases=${n} run ${r + 1}: ${JSON.stringify(x)}`);
          runs[setup].push(x);
        } catch (e) {
          console.error(`pouchdb ${setup} cases=${n}: failed: ${e.stack || e}`);
          failed[setup] = e;
        }
      }
    }
    const R = args.runs;
    for (const setup of Object.keys(SETUPS)) {
      if (failed[setup]) {
        const e = failed[setup];
        console.log(JSON.stringify({ id: 'sync', peer: PEER, parameters: { cases: n, setup }, error: String(e.message || e) }));
        continue;
      }
      const xs = runs[setup];
      const emit = (id, unit, pick, extra = {}) => c.emit(PEER, id, n, R, unit, xs.map(pick), { setup, ...extra });
      emit('sync-new.secs', 's', (x) => x.newSecs);
      emit('sync-new.wall.secs', 's', (x) => x.newWall);
      emit('sync-new.bytes', 'bytes', (x) => x.newBytes, { json_bytes: xs[0].jsonBytes });
      emit('sync-idle.bytes', 'bytes', (x) => x.idleBytes);
      // Also its wall time: the county has everything before the village connects.
      emit('sync-idle.secs', 's', (x) => x.idleSecs);
      emit('sync-1pct.secs', 's', (x) => x.pctSecs);
      emit('sync-1pct.wall.secs', 's', (x) => x.pctWall);
      emit('sync-1pct.bytes', 'bytes', (x) => x.pctBytes);
    }
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
