// Shared by automerge-repo.js and pouchdb.js: arguments, the workload, the relay, statistics.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { fork } = require('node:child_process');
const crypto = require('node:crypto');

function parseArgs(argv) {
  const a = { quick: false, runs: null, sizes: null, workload: 'target/bench/workload-{seed}.jsonl' };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    if (k === '--quick') a.quick = true;
    else if (k === '--runs') a.runs = Number(argv[++i]);
    else if (k === '--sizes') a.sizes = argv[++i].split(',').map(Number);
    else if (k === '--workload') a.workload = argv[++i];
    else throw new Error(`unknown argument ${k}`);
  }
  // The sizes and run counts of yiciban-bench's sync figures.
  a.sizes ??= a.quick ? [200, 1000] : [1000, 10000];
  a.runs ??= a.quick ? 1 : 3;
  return a;
}

const ITEM_NAME = '农村最低生活保障申请';
const VILLAGE = { id: 'village-430181101001', village: '430181101001', town: '430181101000', county: '430181000000' };

// A deterministic UUID-shaped id, so every run and peer names the same case the same way.
function uid(...parts) {
  const h = crypto.createHash('sha256').update(parts.join('/')).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

function hlc(ms, counter = 0) {
  return `${String(ms).padStart(16, '0')}-${String(counter).padStart(5, '0')}`;
}

// The first `n` generated applications of `seed` (dumped by `yiciban-bench --dump-workload`),
// each as the case document a village holds after accepting it: the shape of
// yiciban_core::case_doc::Case with its `accepted` event.
function loadCases(pattern, seed, n) {
  const file = pattern.replace('{seed}', String(seed));
  const lines = fs.readFileSync(file, 'utf8').split('\n').filter(Boolean);
  if (lines.length < n) throw new Error(`${file} holds ${lines.length} cases, ${n} wanted`);
  const t0 = 1795000000000;
  return lines.slice(0, n).map((line, i) => {
    const app = JSON.parse(line);
    const id = uid('case', seed, i);
    const form = {};
    for (const [k, v] of Object.entries(app.form)) form[k] = String(v);
    return {
      id,
      receipt_no: `LY${VILLAGE.village}-${String(i + 1).padStart(6, '0')}`,
      item_code: app.item_code,
      item_name: ITEM_NAME,
      node: VILLAGE.id,
      route: [VILLAGE.village, VILLAGE.town, VILLAGE.county],
      division: { village: VILLAGE.village, town: VILLAGE.town, county: VILLAGE.county },
      applicant: app.applicant,
      proxy: null,
      form,
      materials: app.materials,
      bundle: null,
      events: [event(id, 'accepted', t0 + i * 1000, {})],
    };
  });
}

function event(caseId, kind, ms, payload) {
  return {
    id: uid('event', caseId, kind, ms), at: hlc(ms), node: VILLAGE.id, tier: 'village',
    user: 'clerk', role: 'clerk', kind, payload,
  };
}

// The 1% of sync-1pct: every 100th case (as yiciban-bench) gets one comment.
function commentOf(c) {
  return event(c.id, 'comment', 1796000000000, { text: '已电话联系申请人' });
}

function jsonBytes(cases) {
  return cases.reduce((s, c) => s + Buffer.byteLength(JSON.stringify(c)), 0);
}

// The byte-counting relay as its own process (so it does not share an event loop with a peer).
async function startRelay(target) {
  const child = fork(path.join(__dirname, 'relay.js'), [target], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const port = await new Promise((resolve, reject) => {
    child.once('message', (m) => resolve(m.port));
    child.once('exit', (code) => reject(new Error(`relay exited ${code}`)));
  });
  return {
    port,
    bytes: () => new Promise((resolve) => { child.once('message', (m) => resolve(m.up + m.down)); child.send('bytes'); }),
    // A label in the relay's request log (RELAY_LOG), e.g. the figure that starts now.
    mark: (label) => { if (process.env.RELAY_LOG) child.send({ mark: label }); },
    close: () => child.kill(),
  };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what, limitMs, ok, every = 50) {
  const start = Date.now();
  while (!(await ok())) {
    if (Date.now() - start > limitMs) throw new Error(`${what}: not within ${limitMs} ms`);
    await sleep(every);
  }
}

// Waits until the relay has seen no byte for `quietMs`; returns when the last byte was seen.
async function quiescent(relay, quietMs = 1000, limitMs = 600000) {
  const start = Date.now();
  let last = await relay.bytes();
  let lastChange = Date.now();
  while (Date.now() - lastChange < quietMs) {
    if (Date.now() - start > limitMs) throw new Error('traffic did not settle');
    await sleep(50);
    const b = await relay.bytes();
    if (b !== last) { last = b; lastChange = Date.now(); }
  }
  return lastChange;
}

function stats(values) {
  const v = [...values].sort((a, b) => a - b);
  return { median: v[Math.floor(v.length / 2)], min: v[0], max: v[v.length - 1] };
}

// One JSON line per figure, as yiciban-bench writes ours, plus "peer".
function emit(peer, id, n, runs, unit, values, extra = {}) {
  const line = { id, peer, parameters: { cases: n, runs, link: 'loopback relay', ...extra }, ...stats(values), unit };
  console.log(JSON.stringify(line));
}

module.exports = { parseArgs, loadCases, commentOf, jsonBytes, startRelay, sleep, waitFor, quiescent, emit, uid };
