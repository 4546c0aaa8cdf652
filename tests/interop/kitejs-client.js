// Drives a kite with the real Kite.js client and prints what it saw as one JSON line.
//
//   node kitejs-client.js URL TRANSPORT
//
// TRANSPORT: websocket | xhr-polling | xhr-streaming (SockJS transports, URL = http://host:port/kite)
//            raw (Kite.js's default plain WebSocket transport, URL = ws://host:port/kite/websocket)
'use strict';

const { Kite } = require('kite.js');

const [url, transport] = process.argv.slice(2);
const options = { url, autoReconnect: false, logLevel: 0 };
if (transport !== 'raw') {
  options.transportClass = Kite.transport.SockJS;
  options.transportOptions = { transports: [transport] };
}

const deadline = setTimeout(() => {
  console.log(JSON.stringify({ error: 'timed out' }));
  process.exit(2);
}, 20000);

function settle(promise) {
  return promise.then(
    (result) => ({ result }),
    (err) => ({ error: { type: err.type, message: err.message } })
  );
}

async function main() {
  const kite = new Kite(options);
  await new Promise((resolve) => kite.ready(resolve));
  const out = {};
  out.ping = await settle(kite.tell('kite.ping', []));
  out.square = await settle(kite.tell('square', [4]));
  out.scalar = await settle(kite.tell('square', 5));
  let calls = [];
  out.callback = await settle(
    kite.tell('callback', [{ value: 42, times: 3, cb: (v) => calls.push(v) }])
  );
  out.callbackCalls = calls;
  out.error = await settle(kite.tell('fail', []));
  out.unknown = await settle(kite.tell('nosuch', [1]));
  // Many calls in flight on one connection.
  const many = await Promise.all(
    Array.from({ length: 50 }, (_, i) => kite.tell('square', [i]))
  );
  out.concurrent = many.every((v, i) => v === i * i);
  kite.disconnect();
  clearTimeout(deadline);
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.log(JSON.stringify({ error: String(e && e.stack || e) }));
  process.exit(1);
});
