// Prints the Markdown table of the sync figures in results.jsonl: ours beside both peers', and
// the ratios (yiciban ÷ peer; below 1 means we use less time or fewer bytes). PouchDB runs in two
// setups (parameters.setup: "replicate", one way, and "sync", both ways; lines without it are
// from before there were two, and were "sync"): both are shown, and each figure of ours is held
// against the better (lower) of the two.
//   node scripts/peers/table.js target/bench/results.jsonl
'use strict';
const fs = require('node:fs');
const lines = fs.readFileSync(process.argv[2] || 'target/bench/results.jsonl', 'utf8')
  .split('\n').filter(Boolean).map((l) => JSON.parse(l));
const key = (l) => `${l.id}|${l.parameters?.cases}`;
const ours = new Map(lines.filter((l) => !l.peer && l.id.startsWith('sync-')).map((l) => [key(l), l]));
const peerOf = (prefix) => {
  const m = new Map();
  for (const l of lines.filter((x) => x.peer && x.peer.startsWith(prefix))) {
    if (l.error) m.set(`failed|${l.parameters.cases}`, l); else m.set(key(l), l);
  }
  return m;
};
// A peer's figures are whole replications from its first connection: where a peer gives no
// `.wall.secs` of its own (automerge-repo; PouchDB's idle), its `.secs` is that wall time, held
// against ours from the village's dial to durable at the county.
const withWall = (m) => {
  for (const [k, l] of [...m]) {
    const [id, n] = k.split('|');
    const wall = id.replace(/\.secs$/, '.wall.secs');
    if (id.endsWith('.secs') && !id.endsWith('.wall.secs') && !m.has(`${wall}|${n}`)) {
      m.set(`${wall}|${n}`, { ...l, id: wall });
    }
  }
  return m;
};
const am = withWall(peerOf('automerge-repo'));
const pdOf = (setup) => {
  const m = new Map();
  for (const l of lines.filter((x) => x.peer && x.peer.startsWith('PouchDB') && (x.parameters?.setup || 'sync') === setup)) {
    if (l.error) m.set(`failed|${l.parameters.cases}`, l); else m.set(key(l), l);
  }
  return m;
};
const pdOne = withWall(pdOf('replicate'));
const pdTwo = withWall(pdOf('sync'));
const num = (l, v) => (l.unit === 'bytes' ? Math.round(v).toLocaleString('en') : v.toFixed(2));
const unit = (l) => (l.unit === 's' ? ' s' : l.unit === 'bytes' ? ' B' : ` ${l.unit.split(' ')[0]}`);
const fmt = (l) => {
  if (!l) return '—';
  const v = `${num(l, l.median)}${unit(l)}`;
  return l.min !== l.max ? `${v} (${num(l, l.min)}–${num(l, l.max)})` : v;
};
const ratio = (a, b) => (a && b && b.median ? `${(a.median / b.median).toFixed(2)}` : '—');
const keys = new Set([...ours.keys(), ...am.keys(), ...pdOne.keys(), ...pdTwo.keys()].filter((k) => !k.startsWith('failed')));
const order = ['sync-new.secs', 'sync-new.wall.secs', 'sync-new.bytes', 'sync-idle.bytes', 'sync-idle.secs',
  'sync-idle.wall.secs', 'sync-1pct.secs', 'sync-1pct.wall.secs', 'sync-1pct.bytes'];
const sorted = [...keys].sort((a, b) => {
  const [ia, na] = a.split('|'); const [ib, nb] = b.split('|');
  // Figures not in `order` (ours only, e.g. sync-new.stream.bytes) after those that are.
  const rank = (id) => (order.includes(id) ? order.indexOf(id) : order.length);
  return Number(na) - Number(nb) || rank(ia) - rank(ib) || ia.localeCompare(ib);
});
const name = (m, fallback) => [...m.values()].find((l) => !l.error)?.peer || fallback;
const pdName = name(pdOne, name(pdTwo, 'PouchDB'));
let out = `| figure | cases | yiciban | ${name(am, 'automerge-repo')} | ${pdName}, one way (replicate) | ${pdName}, both ways (sync) | ÷ automerge-repo | ÷ PouchDB (the lower) |\n|---|---|---|---|---|---|---|---|\n`;
const get = (m, k, n) => m.get(k) || (m.get(`failed|${n}`) && { failed: true });
const cell = (x) => (x?.failed ? 'failed' : fmt(x));
for (const k of sorted) {
  const [id, n] = k.split('|');
  const a = get(am, k, n);
  const one = get(pdOne, k, n);
  const two = get(pdTwo, k, n);
  // The better PouchDB setup for this figure: the lower median of those that ran.
  const ran = [['replicate', one], ['sync', two]].filter(([, x]) => x && !x.failed);
  const best = ran.sort((x, y) => x[1].median - y[1].median)[0];
  const pdRatio = best && ours.get(k) ? `${ratio(ours.get(k), best[1])} (${best[0]})` : '—';
  out += `| ${id} | ${Number(n).toLocaleString('en')} | ${fmt(ours.get(k))} | ${cell(a)} | ${cell(one)} | ${cell(two)} | ${ratio(ours.get(k), a?.failed ? null : a)} | ${pdRatio} |\n`;
}
process.stdout.write(out);
