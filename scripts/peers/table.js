// Prints the Markdown table of the sync figures in results.jsonl: ours beside both peers', and
// the ratios (yiciban ÷ peer; below 1 means we use less time or fewer bytes).
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
const am = peerOf('automerge-repo');
const pd = peerOf('PouchDB');
const num = (l, v) => (l.unit === 'bytes' ? Math.round(v).toLocaleString('en') : v.toFixed(2));
const unit = (l) => (l.unit === 's' ? ' s' : l.unit === 'bytes' ? ' B' : ` ${l.unit.split(' ')[0]}`);
const fmt = (l) => {
  if (!l) return '—';
  const v = `${num(l, l.median)}${unit(l)}`;
  return l.min !== l.max ? `${v} (${num(l, l.min)}–${num(l, l.max)})` : v;
};
const ratio = (a, b) => (a && b && b.median ? `${(a.median / b.median).toFixed(2)}` : '—');
const keys = new Set([...ours.keys(), ...am.keys(), ...pd.keys()].filter((k) => !k.startsWith('failed')));
const order = ['sync-new.secs', 'sync-new.bytes', 'sync-idle.bytes', 'sync-idle.secs', 'sync-1pct.secs', 'sync-1pct.bytes'];
const sorted = [...keys].sort((a, b) => {
  const [ia, na] = a.split('|'); const [ib, nb] = b.split('|');
  return Number(na) - Number(nb) || order.indexOf(ia) - order.indexOf(ib);
});
const name = (m, fallback) => [...m.values()][0]?.peer || fallback;
let out = `| figure | cases | yiciban | ${name(am, 'automerge-repo')} | ${name(pd, 'PouchDB')} | ÷ automerge-repo | ÷ PouchDB |\n|---|---|---|---|---|---|---|\n`;
for (const k of sorted) {
  const [id, n] = k.split('|');
  const a = am.get(k) || (am.get(`failed|${n}`) && { failed: true });
  const p = pd.get(k) || (pd.get(`failed|${n}`) && { failed: true });
  const cell = (x) => (x?.failed ? 'failed' : fmt(x));
  out += `| ${id} | ${Number(n).toLocaleString('en')} | ${fmt(ours.get(k))} | ${cell(a)} | ${cell(p)} | ${ratio(ours.get(k), a?.failed ? null : a)} | ${ratio(ours.get(k), p?.failed ? null : p)} |\n`;
}
process.stdout.write(out);
