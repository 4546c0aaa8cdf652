// Calls a kite by hand over the real sockjs-client: dnode requests as Go and Kite.js send them,
// one transport forced. Prints one JSON line; exit code 0 only if the answers are right.
//
//   node sockjs-client-kite.js URL TRANSPORT      (URL = http://127.0.0.1:PORT/kite)
'use strict';

const SockJS = require('sockjs-client');

const [url, transport] = process.argv.slice(2);

function finish(result, code) {
  console.log(JSON.stringify(result));
  process.exit(code);
}

const deadline = setTimeout(() => finish({ error: 'timed out', transport }, 2), 20000);

const kite = {
  username: 'sockjs-client', environment: 'test', name: 'node', version: '1.0.0',
  region: 'local', hostname: 'localhost', id: 'b9a5c4e4-1a1d-4f0c-8d6d-0a0f5e2e6b11',
};

function request(method, args, callbackId) {
  return JSON.stringify({
    method,
    arguments: [{ kite, withArgs: args, responseCallback: '[Function]' }],
    callbacks: { [callbackId]: ['0', 'responseCallback'] },
    links: [],
  });
}

const sock = new SockJS(url, null, { transports: [transport] });
const answers = {};
let used = null;

sock.onopen = () => {
  used = sock.transport;
  if (sock.transport !== transport) {
    finish({ error: `transport ${sock.transport}, wanted ${transport}` }, 1);
  }
  sock.send(request('kite.ping', [], 1));
  sock.send(request('square', [4], 2));
  sock.send(request('square', ['four'], 3));
};

sock.onmessage = (e) => {
  const msg = JSON.parse(e.data);
  answers[msg.method] = msg.arguments[0];
  if (Object.keys(answers).length === 3) {
    clearTimeout(deadline);
    sock.close();
    const ok = answers[1].result === 'pong' && answers[1].error === null
      && answers[2].result === 16 && answers[2].error === null
      && answers[3].error && answers[3].error.type === 'argumentError';
    finish({ transport: used, answers }, ok ? 0 : 1);
  }
};

sock.onclose = (e) => {
  finish({ error: `closed: ${e.code} ${e.reason}`, answers }, 1);
};
