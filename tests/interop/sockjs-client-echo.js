// Drives a SockJS echo service with the real sockjs-client, one transport forced, and prints
// what it saw as one JSON line; the exit code is 0 only if everything came back exactly, in
// order, and the session closed as asked.
//
//   node sockjs-client-echo.js URL TRANSPORT
//   node sockjs-client-echo.js URL TRANSPORT close-while-sending CLOSE_URL
//
// URL: a SockJS echo service (http://127.0.0.1:PORT/echo) that echoes every message, except
// that on the message `CLOSE_ME` below it sends `bye 1`, `bye 2` and then closes the session with
// c[3000,"Go away!"] (kite-native/tests/sockjs_client.rs serves one). TRANSPORT: a sockjs-client
// transport name (websocket, xhr-streaming, xhr-polling, eventsource).
//
// Phases, one after the other on one session:
//   sizes        0 B, 1 B, 100 B, 4 KiB, 64 KiB, 200 KiB, 512 KiB and 1 MiB, sent at once
//   unicode      accents, CJK, emoji and other astral characters, every BMP character but the
//                surrogates in one message, U+2028/2029 and the other ranges SockJS escapes,
//                quotes, backslashes, control characters, <>&, JSON- and frame-looking text
//   burst        500 small messages sent at once (with the xhr transports most are sent while
//                a receiving request is outstanding, and sockjs-client batches them)
//   trickle      300 messages sent a few per event-loop turn while the echoes stream back
//   pingpong     40 round trips, each message sent from the handler of the previous echo
//   idle         an idle 300 ms (heartbeats, if the server sends them often), then an echo
//   close        CLOSE_ME: the messages the server queues before closing arrive, in order,
//                before `close` (code 3000, "Go away!"); nothing arrives after it; send() in
//                the close handler is ignored and does not throw
// then a second session closed by the client: `close` with 1000 "Normal closure".
//
// With `close-while-sending`, instead: five sessions that each send `before`, `CLOSE_ME`, at
// once 100 more messages and then one more every millisecond until `close`, so that the server
// closes the session while messages are still coming; each must see `before`, `bye 1`, `bye 2`
// and then `close` 3000 "Go away!" (the messages after `CLOSE_ME` are dropped by the server,
// not echoed, and sending them is no error). Then five sessions with CLOSE_URL, a service that
// closes every session with c[3000,"Go away!"] as soon as it opens, each sending from `open`
// until `close`: each must see no message and `close` 3000 "Go away!". sockjs-node 0.3 passes
// both on every transport.
'use strict';

const SockJS = require('sockjs-client');

const [url, transport, mode = 'echo', closeUrl] = process.argv.slice(2);
if (!url || !transport || !(mode === 'echo' || (mode === 'close-while-sending' && closeUrl))) {
  console.error('usage: node sockjs-client-echo.js URL TRANSPORT [close-while-sending CLOSE_URL]');
  process.exit(64);
}

const CLOSE_ME = 'sockjs-client-echo: close me';

const out = {
  wanted: transport,
  transport: null,
  phases: {},
  sent: 0,
  received: 0,
  mismatches: [],
  unexpected: [],
  heartbeats: 0,
  close: null,
  clientClose: null,
  errors: [],
};

const started = Date.now();

function finish(code) {
  out.elapsedMs = Date.now() - started;
  console.log(JSON.stringify(out));
  process.exit(code);
}

const deadline = setTimeout(() => {
  out.errors.push('timed out');
  finish(2);
}, 30000);

function fail(what) {
  out.errors.push(what);
  finish(1);
}

function describe(s) {
  if (typeof s !== 'string') return { type: typeof s };
  return { length: s.length, start: JSON.stringify(s.slice(0, 40)) };
}

function text(size) {
  let s = '';
  while (s.length < size) s += 'abcdefghij0123456789';
  return s.slice(0, size);
}

function everyBmpCharacter() {
  let s = '';
  for (let c = 0; c < 0x10000; c++) {
    if (c < 0xd800 || c > 0xdfff) s += String.fromCharCode(c);
  }
  return s;
}

// 1 MiB is the largest message a kite takes (`max_message_size`).
const sizes = [0, 1, 100, 4096, 65536, 200 * 1024, 512 * 1024, 1024 * 1024].map(text);
const unicode = [
  'café naïve façade Ångström Ægir œuvre ß ñ',
  '中文字符 日本語のテキスト 한국어 텍스트',
  'emoji 😀👍🏽 👩‍👩‍👧‍👦 🇩🇪 astral 𝄞 𝕏 𠀀 \u{10FFFF} \u{1F600}',
  'line\u2028separator\u2029paragraph \u200b\u200c\u200d\u200e\u200f \u2060\u2061\u206f \ufeff \ufff0\ufffd\ufffe\uffff',
  'combining e\u0301 a\u0300\u0316 \u0591\u05af hebrew, devanagari \u0958 \u0951',
  'percent %41 %25 %E2%82%AC %0A %00 decoded by nobody',
  'percent 100% sure, 50 %, %%, %zz, %',
  'quotes " \' ` and \\ backslashes \\\\ \\" \\u0041 \\n',
  'control \u0000\u0001\u0002\u0007\u0008\u000b\u000c\u001b\u001f\u007f\u0080\u009f \n\r\t end',
  '<script>alert("&amp; &lt;")</script> </script> <!-- --> & < > ]]>',
  '{"method":"square","arguments":[4]}',
  '["not","a","frame"]',
  'a["looks like a frame"]',
  'c[3000,"Go away!"]',
  'o',
  'h',
  '\n',
  ' ',
  '"',
  '\\',
  '[]',
  'null',
  everyBmpCharacter(),
  Array.from({ length: 2000 }, (_, i) => String.fromCodePoint(0x10000 + i * 523)).join(''),
];
const burst = Array.from({ length: 500 }, (_, i) => `burst ${i}`);
const trickle = Array.from({ length: 300 }, (_, i) => `trickle ${i} ${'x'.repeat(i % 50)}`);

// Echoes still owed, in order: {phase, index, text}.
let owed = [];
let waiter = null;
let closed = false;

function received(data) {
  out.received++;
  if (closed) {
    out.unexpected.push({ afterClose: true, got: describe(data) });
    return;
  }
  const want = owed.shift();
  if (!want) {
    out.unexpected.push({ got: describe(data) });
    return;
  }
  const p = out.phases[want.phase];
  p.received++;
  if (data !== want.text) {
    out.mismatches.push({
      phase: want.phase, index: want.index, sent: describe(want.text), got: describe(data),
    });
  }
  if (owed.length === 0 && waiter) {
    const w = waiter;
    waiter = null;
    w();
  }
}

function expect(phase, texts) {
  if (!out.phases[phase]) out.phases[phase] = { sent: 0, received: 0 };
  texts.forEach((t, index) => owed.push({ phase, index, text: t }));
}

function send(sock, phase, texts) {
  expect(phase, texts);
  for (const t of texts) {
    sock.send(t);
    out.phases[phase].sent++;
    out.sent++;
  }
}

function drained() {
  return owed.length === 0 ? Promise.resolve() : new Promise((resolve) => { waiter = resolve; });
}

function turn() {
  return new Promise((resolve) => setImmediate(resolve));
}

function open(onMessage, at = url) {
  return new Promise((resolve, reject) => {
    const sock = new SockJS(at, null, { transports: [transport] });
    sock.onopen = () => {
      if (sock.transport !== transport) {
        reject(new Error(`opened with transport ${sock.transport}, wanted ${transport}`));
        return;
      }
      resolve(sock);
    };
    sock.onmessage = (e) => onMessage(e.data);
    sock.onclose = (e) => reject(new Error(`closed before opening: ${e.code} ${e.reason}`));
  });
}

async function main() {
  const sock = await open(received);
  out.transport = sock.transport;
  sock.addEventListener('heartbeat', () => out.heartbeats++);
  sock.onclose = (e) => fail(`closed early: ${e.code} ${e.reason}`);
  const phase = async (name, f) => {
    await f();
    await drained();
  };

  await phase('sizes', () => send(sock, 'sizes', sizes));
  await phase('unicode', () => send(sock, 'unicode', unicode));
  await phase('burst', () => send(sock, 'burst', burst));
  await phase('trickle', async () => {
    for (let i = 0; i < trickle.length; i += 3) {
      send(sock, 'trickle', trickle.slice(i, i + 3));
      await turn();
    }
  });
  await phase('pingpong', () => new Promise((resolve) => {
    let n = 0;
    const next = () => {
      if (n === 40) {
        resolve();
        return;
      }
      const t = `ping ${n++}`;
      send(sock, 'pingpong', [t]);
      waiter = next;
    };
    next();
  }));
  await phase('idle', async () => {
    await new Promise((resolve) => setTimeout(resolve, 300));
    send(sock, 'idle', ['after idle']);
  });

  // Server-side close: what it queued first arrives first, then `close`, then nothing.
  const closing = new Promise((resolve) => {
    sock.onclose = (e) => {
      closed = true;
      let threw = null;
      try {
        sock.send('sent from the close handler');
      } catch (err) {
        threw = String(err);
      }
      out.close = {
        code: e.code,
        reason: e.reason,
        wasClean: e.wasClean,
        readyState: sock.readyState,
        owed: owed.length,
        sendInCloseHandlerThrew: threw,
      };
      resolve();
    };
  });
  expect('close', ['bye 1', 'bye 2']);
  sock.send(CLOSE_ME);
  out.sent++;
  await closing;
  // Let anything still in flight surface (it must not).
  await new Promise((resolve) => setTimeout(resolve, 50));

  // Client-side close of a second session.
  const second = await open((d) => received(d));
  closed = false;
  send(second, 'second', ['one', 'two', 'three']);
  await drained();
  out.clientClose = await new Promise((resolve) => {
    second.onclose = (e) => resolve({ code: e.code, reason: e.reason, wasClean: e.wasClean });
    second.close();
  });

  clearTimeout(deadline);
  const ok = out.transport === transport
    && out.received === out.sent - 1 + 2 /* CLOSE_ME is not echoed; bye 1, bye 2 */
    && out.mismatches.length === 0
    && out.unexpected.length === 0
    && out.close && out.close.code === 3000 && out.close.reason === 'Go away!'
    && out.close.owed === 0 && out.close.sendInCloseHandlerThrew === null
    && out.clientClose.code === 1000;
  finish(ok ? 0 : 1);
}

// Sessions closed by the server while the client is still sending.
async function closeWhileSending() {
  out.sessions = [];
  for (let n = 0; n < 10; n++) {
    const closedAtOnce = n >= 5;
    const got = [];
    const sock = await open((d) => got.push(d), closedAtOnce ? closeUrl : url);
    // (open() checked the transport; a session closed at once may have lost it already.)
    out.transport = transport;
    const close = await new Promise((resolve) => {
      let open = true;
      sock.onclose = (e) => {
        open = false;
        resolve({ code: e.code, reason: e.reason });
      };
      if (!closedAtOnce) {
        sock.send('before');
        sock.send(CLOSE_ME);
      }
      for (let i = 0; i < 100; i++) sock.send(`after ${i}`);
      // And more until the close arrives: with the xhr transports, sends after the server
      // closed the session but before its close frame reached us.
      let i = 100;
      const more = () => {
        if (!open) return;
        sock.send(`after ${i++}`);
        setTimeout(more, 1);
      };
      more();
    });
    out.sessions.push({ service: closedAtOnce ? 'close' : 'echo', got, close });
  }
  clearTimeout(deadline);
  const ok = out.sessions.every((s) => JSON.stringify(s) === JSON.stringify({
    service: s.service,
    got: s.service === 'echo' ? ['before', 'bye 1', 'bye 2'] : [],
    close: { code: 3000, reason: 'Go away!' },
  }));
  finish(ok ? 0 : 1);
}

// An exception thrown inside sockjs-client (in a receiver's event handler) fails the run too.
process.on('uncaughtException', (e) => fail(`uncaught: ${(e && e.stack) || e}`));
(mode === 'echo' ? main : closeWhileSending)().catch((e) => fail(String((e && e.stack) || e)));
