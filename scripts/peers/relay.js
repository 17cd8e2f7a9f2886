// A byte-counting TCP relay: the TCP counterpart of tests/src/relay.rs.
//   node relay.js TARGET_HOST:PORT [LISTEN_PORT]
// Listens on 127.0.0.1 (a free port unless given), forwards every connection to the target and
// counts the payload bytes of the TCP streams in both directions, as they arrive at the relay.
// Prints {"port": N} once listening; then, for every line "bytes" on stdin (or over the IPC
// channel when forked), and at exit, {"up": client→target, "down": target→client, "connections"}.
'use strict';
const net = require('node:net');

const [host, port] = (process.argv[2] || '').split(':');
if (!host || !port) {
  console.error('usage: node relay.js TARGET_HOST:PORT [LISTEN_PORT]');
  process.exit(2);
}
const totals = { up: 0, down: 0, connections: 0 };
const report = () => JSON.stringify(totals);

const server = net.createServer((client) => {
  totals.connections += 1;
  client.setNoDelay(true);
  const upstream = net.connect({ host, port: Number(port) });
  upstream.setNoDelay(true);
  client.on('data', (b) => { totals.up += b.length; if (!upstream.write(b)) client.pause(); });
  upstream.on('drain', () => client.resume());
  upstream.on('data', (b) => { totals.down += b.length; if (!client.write(b)) upstream.pause(); });
  client.on('drain', () => upstream.resume());
  client.on('end', () => upstream.end());
  upstream.on('end', () => client.end());
  client.on('error', () => upstream.destroy());
  upstream.on('error', () => client.destroy());
  client.on('close', () => upstream.destroy());
  upstream.on('close', () => client.destroy());
});
server.listen(Number(process.argv[3] || 0), '127.0.0.1', () => {
  const msg = { port: server.address().port };
  if (process.send) process.send(msg); else console.log(JSON.stringify(msg));
});
if (process.send) {
  process.on('message', (m) => { if (m === 'bytes') process.send({ ...totals }); });
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
