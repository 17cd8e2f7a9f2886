// A byte-counting TCP relay: the TCP counterpart of tests/src/relay.rs.
//   node relay.js TARGET_HOST:PORT [LISTEN_PORT]
// Listens on 127.0.0.1 (a free port unless given), forwards every connection to the target and
// counts the payload bytes of the TCP streams in both directions, as they arrive at the relay.
// Prints {"port": N} once listening; then, for every line "bytes" on stdin (or over the IPC
// channel when forked), and at exit, {"up": client→target, "down": target→client, "connections"}.
// With RELAY_LOG=FILE it also appends to FILE one JSON line per HTTP request it carried:
// {"conn", "req": request line, "up": bytes of the request, "down": bytes of its response,
// "at": when its first byte came, ms since the epoch, "ms": from then until the last byte
// of its response}, and {"mark", "at"} for every {"mark": label} message over the IPC channel (a
// figure starting). A request is written when the next one on its connection starts (or at the
// close), so lines are in order of "at", not of the file.
'use strict';
const fs = require('node:fs');
const net = require('node:net');

const [host, port] = (process.argv[2] || '').split(':');
if (!host || !port) {
  console.error('usage: node relay.js TARGET_HOST:PORT [LISTEN_PORT]');
  process.exit(2);
}
const totals = { up: 0, down: 0, connections: 0 };
const report = () => JSON.stringify(totals);

// The request log. PouchDB's HTTP client (Node's fetch) sends one request at a time on a
// connection and waits for the whole response, so a request starts with the first client byte
// after response bytes, and what comes down until then is its response.
const logFile = process.env.RELAY_LOG;
const log = logFile ? (o) => fs.appendFileSync(logFile, `${JSON.stringify(o)}\n`) : null;
function tracker(conn) {
  let cur = null;
  const end = () => {
    if (cur) log({ conn, req: cur.req, up: cur.up, down: cur.down, at: +(performance.timeOrigin + cur.t).toFixed(1), ms: +(cur.last - cur.t).toFixed(1) });
    cur = null;
  };
  return {
    up(b) {
      if (!cur || cur.down > 0) {
        end();
        const head = b.subarray(0, 300).toString('latin1');
        const eol = head.indexOf('\r\n');
        cur = { req: head.slice(0, eol >= 0 ? eol : 120), up: 0, down: 0, t: performance.now(), last: performance.now() };
      }
      cur.up += b.length;
    },
    down(b) {
      if (!cur) return log({ conn, unsolicited: b.length, at: +(performance.timeOrigin + performance.now()).toFixed(1) });
      cur.down += b.length;
      cur.last = performance.now();
    },
    end,
  };
}

const server = net.createServer((client) => {
  totals.connections += 1;
  const t = log && tracker(totals.connections);
  client.setNoDelay(true);
  const upstream = net.connect({ host, port: Number(port) });
  upstream.setNoDelay(true);
  client.on('data', (b) => { totals.up += b.length; if (t) t.up(b); if (!upstream.write(b)) client.pause(); });
  upstream.on('drain', () => client.resume());
  upstream.on('data', (b) => { totals.down += b.length; if (t) t.down(b); if (!client.write(b)) upstream.pause(); });
  client.on('drain', () => upstream.resume());
  client.on('end', () => upstream.end());
  upstream.on('end', () => client.end());
  client.on('error', () => upstream.destroy());
  upstream.on('error', () => client.destroy());
  client.on('close', () => { if (t) t.end(); upstream.destroy(); });
  upstream.on('close', () => client.destroy());
});
server.listen(Number(process.argv[3] || 0), '127.0.0.1', () => {
  const msg = { port: server.address().port };
  if (process.send) process.send(msg); else console.log(JSON.stringify(msg));
});
if (process.send) {
  process.on('message', (m) => {
    if (m === 'bytes') process.send({ ...totals });
    else if (m && m.mark && log) log({ mark: m.mark, at: +(performance.timeOrigin + performance.now()).toFixed(1), ...totals });
  });
  process.on('disconnect', () => process.exit(0));
} else {
  process.stdin.setEncoding('utf8');
  let buf = '';
  process.stdin.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      if (buf.slice(0, i).trim() === 'bytes') console.log(report());
      buf = buf.slice(i + 1);
    }
  });
}
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
process.on('exit', () => { if (!process.send) console.log(report()); });
