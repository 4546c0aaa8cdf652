// Echoes many messages through a SockJS echo service with the real sockjs-client, forcing one
// transport, and prints what it saw as one JSON line (exit code 0 only if everything came back).
//
//   node sockjs-client-echo.js URL TRANSPORT
//
// URL: a SockJS echo service (http://127.0.0.1:PORT/echo). TRANSPORT: a sockjs-client
// transport name (websocket, xhr-streaming, xhr-polling, eventsource).
'use strict';

const SockJS = require('sockjs-client');

const [url, transport] = process.argv.slice(2);

function finish(result, code) {
  console.log(JSON.stringify(result));
  process.exit(code);
}

const deadline = setTimeout(() => finish({ error: 'timed out', transport }, 2), 30000);

// Sizes, Unicode of every kind, JSON-looking and escaping-heavy text.
const messages = [];
for (const size of [0, 1, 100, 4096, 65536, 200 * 1024]) {
  let s = '';
  while (s.length < size) s += 'abcdefghij0123456789';
  messages.push(s.slice(0, size));
}
messages.push(
  'café naïve façade',
  '中文字符 日本語 한국어',
  'emoji 😀👍🏽 👩‍👩‍👧 astral 𝄞',
  'line\u2028sep\u2029para\u200c\u200d\ufeff\ufff0\uffff',
  'quotes " \' and \\ backslashes \\\\',
  'control \u0000\u0001\u001f\u007f\n\r\t',
  '<script>alert("&amp;")</script>',
  '{"method":"square","arguments":[4]}',
  '["not","a","frame"]'
);
// A burst sent at once: with polling transports many are sent while a poll is outstanding.
for (let i = 0; i < 500; i++) messages.push(`burst ${i}`);

const sock = new SockJS(url, null, { transports: [transport] });
const got = [];
let opened = false;
let used = null;

sock.onopen = () => {
  opened = true;
  used = sock.transport;
  if (sock.transport !== transport) {
    finish({ error: `transport ${sock.transport}, wanted ${transport}` }, 1);
  }
  for (const m of messages) sock.send(m);
};

sock.onmessage = (e) => {
  got.push(e.data);
  if (got.length === messages.length) {
    const mismatches = [];
    messages.forEach((m, i) => {
      if (got[i] !== m) {
        mismatches.push({ index: i, sent: m.slice(0, 40), sentLength: m.length, got: String(got[i]).slice(0, 40), gotLength: String(got[i]).length });
      }
    });
    sock.close();
    clearTimeout(deadline);
    finish({ transport: used, sent: messages.length, received: got.length, mismatches }, mismatches.length ? 1 : 0);
  }
};

sock.onclose = (e) => {
  if (got.length !== messages.length) {
    finish({ error: `closed early: ${e.code} ${e.reason}`, opened, transport, received: got.length }, 1);
  }
};
