// Calls a kite by hand over the real sockjs-client, one transport forced: dnode requests
// written out as Go kite and Kite.js put them on the wire (the golden captures in
// kite-core/tests/golden/, s1-go-go-websocket.jsonl and s2-kitejs-go-sockjs-websocket.jsonl),
// checked against the exact bytes the Go server answered there. Prints one JSON line
// ({transport, passed, failed, unexpected, errors}); the exit code is 0 only if every case passed.
//
//   node sockjs-client-kite.js URL TRANSPORT      (URL = http://127.0.0.1:PORT/kite)
//
// The kite must have the methods of kite-native/tests/common/mod.rs: `square`, `callback`
// ({value, times, cb}) and `ask` (calls the caller's `client.hello` and answers
// "client said: <its answer>"); and authentication disabled.
'use strict';

const SockJS = require('sockjs-client');

const [url, transport] = process.argv.slice(2);
if (!url || !transport) {
  console.error('usage: node sockjs-client-kite.js URL TRANSPORT');
  process.exit(64);
}

const out = { transport: null, passed: [], failed: [], unexpected: [], errors: [] };

const started = Date.now();

function finish(code) {
  out.elapsedMs = Date.now() - started;
  console.log(JSON.stringify(out));
  process.exit(code);
}

const deadline = setTimeout(() => {
  out.errors.push('timed out');
  out.pending = Object.keys(cases).filter((c) => !cases[c].done);
  finish(2);
}, 20000);

// The callers' identities as captured (Go: struct order; Kite.js: getKiteInfo order).
const GO_KITE = '{"name":"math-client","username":"testuser","id":"fab13266-fc82-4801-a9c3-fb72d75fe78b","environment":"unknown","region":"unknown","version":"1.0.0","hostname":"vm"}';
const JS_KITE = '{"id":"ad8ec4c5-80f1-4102-962e-f30aa73f3e33","username":"testuser","environment":"browser-environment","name":"kitejs-golden","version":"1.0.13","region":"browser-region","hostname":"browser-hostname"}';

// A Go client's request (G:client.go): method first, `authentication: null`, number paths.
function goRequest(method, withArgs, callbacks) {
  return `{"method":${JSON.stringify(method)},"arguments":[{"kite":${GO_KITE},"authentication":null,"responseCallback":"[Function]","withArgs":${withArgs}}],"callbacks":${callbacks}}`;
}

// A Kite.js client's request: method last, `links`, string paths, no `authentication`, and no
// `withArgs` at all for a call without arguments.
function jsRequest(method, withArgs, callbacks) {
  const w = withArgs === undefined ? '' : `"withArgs":${withArgs},`;
  return `{"arguments":[{"kite":${JS_KITE},${w}"responseCallback":"[Function]"}],"callbacks":${callbacks},"links":[],"method":${JSON.stringify(method)}}`;
}

function ok(id, result) {
  return `{"method":${id},"arguments":[{"error":null,"result":${JSON.stringify(result)}}],"callbacks":{}}`;
}

// case name -> {request, expect: {callback id: [exact message | RegExp, ...]}, before: [[id, id]]}
const cases = {
  'go-ping': {
    request: goRequest('kite.ping', 'null', '{"10":[0,"responseCallback"]}'),
    expect: { 10: [ok(10, 'pong')] },
  },
  'go-square': {
    request: goRequest('square', '[4]', '{"11":[0,"responseCallback"]}'),
    expect: { 11: [ok(11, 16)] },
  },
  'kitejs-ping': {
    request: jsRequest('kite.ping', undefined, '{"20":["0","responseCallback"]}'),
    expect: { 20: [ok(20, 'pong')] },
  },
  'kitejs-square': {
    request: jsRequest('square', '[4]', '{"21":["0","responseCallback"]}'),
    expect: { 21: [ok(21, 16)] },
  },
  // Method first, Kite.js's key order inside, number paths and `links`.
  'brief-square': {
    request: `{"method":"square","arguments":[{"kite":${JS_KITE},"withArgs":[4],"responseCallback":"[Function]"}],"callbacks":{"0":[0,"responseCallback"]},"links":[]}`,
    expect: { 0: [ok(0, 16)] },
  },
  // The server calls our callback three times, then answers (s1 callback-3-times).
  'go-callback': {
    request: goRequest('callback', '[{"cb":"[Function]","times":3,"value":42}]',
      '{"30":[0,"responseCallback"],"31":[0,"withArgs",0,"cb"]}'),
    expect: {
      31: Array(3).fill('{"method":31,"arguments":[42],"callbacks":{}}'),
      30: [ok(30, 42)],
    },
    before: [[31, 30]],
  },
  // The same with Kite.js's string paths (s2 callback3).
  'kitejs-callback': {
    request: jsRequest('callback', '[{"value":42,"cb":"[Function]","times":3}]',
      '{"40":["0","withArgs","0","cb"],"41":["0","responseCallback"]}'),
    expect: {
      40: Array(3).fill('{"method":40,"arguments":[42],"callbacks":{}}'),
      41: [ok(41, 42)],
    },
    before: [[40, 41]],
  },
  // The message is ours; the shape is Go's (s1 error-argument-type): a 16-hex request id.
  'argument-error': {
    request: goRequest('square', '["four"]', '{"50":[0,"responseCallback"]}'),
    expect: {
      50: [/^\{"method":50,"arguments":\[\{"error":\{"type":"argumentError","message":"(?:[^"\\]|\\.)+","code":"","id":"[0-9a-f]{16}"\},"result":null\}\],"callbacks":\{\}\}$/],
    },
  },
  // Byte for byte what Go answered (s1 unknown-method).
  'method-not-found': {
    request: goRequest('nosuch', '[1]', '{"60":[0,"responseCallback"]}'),
    expect: {
      60: ['{"method":60,"arguments":[{"error":{"type":"methodNotFound","message":"Method not found: nosuch","code":"","id":""},"result":null}],"callbacks":{}}'],
    },
  },
  // The kite calls our `client.hello` before it answers; we answer that call by hand.
  'reverse-call': {
    request: goRequest('ask', '["node"]', '{"70":[0,"responseCallback"]}'),
    expect: { 70: [ok(70, 'client said: hello node')] },
  },
  // 100 calls in flight on one session.
  'many-in-flight': {
    request: Array.from({ length: 100 }, (_, i) =>
      goRequest('square', `[${i}]`, `{"${1000 + i}":[0,"responseCallback"]}`)),
    expect: Object.fromEntries(Array.from({ length: 100 }, (_, i) => [1000 + i, [ok(1000 + i, i * i)]])),
  },
};

// callback id -> case, and the arrival order of every message per id.
const owner = {};
for (const [name, c] of Object.entries(cases)) {
  c.seen = {};
  c.remaining = 0;
  for (const [id, msgs] of Object.entries(c.expect)) {
    owner[id] = name;
    c.seen[id] = [];
    c.remaining += msgs.length;
  }
}
let arrival = 0;
const reverse = { requests: 0 };

function judge(name) {
  const c = cases[name];
  c.done = true;
  for (const [id, msgs] of Object.entries(c.expect)) {
    for (let i = 0; i < msgs.length; i++) {
      const got = c.seen[id][i].text;
      const want = msgs[i];
      const good = want instanceof RegExp ? want.test(got) : got === want;
      if (!good) {
        out.failed.push({ case: name, want: String(want), got });
        return;
      }
    }
  }
  for (const [first, then] of c.before || []) {
    const lastFirst = Math.max(...c.seen[first].map((s) => s.at));
    const firstThen = Math.min(...c.seen[then].map((s) => s.at));
    if (!(lastFirst < firstThen)) {
      out.failed.push({ case: name, order: `callback ${first} after ${then}` });
      return;
    }
  }
  if (name === 'reverse-call' && reverse.requests !== 1) {
    out.failed.push({ case: name, reverseRequests: reverse.requests, reverse });
    return;
  }
  out.passed.push(name);
}

// A request from the kite (its `ask` calling our `client.hello`): answer it as Go would.
function serveRequest(sock, text, msg) {
  reverse.requests++;
  const opts = msg.arguments && msg.arguments[0];
  const ids = Object.entries(msg.callbacks || {})
    .filter(([, path]) => path.length === 2 && String(path[0]) === '0' && path[1] === 'responseCallback')
    .map(([id]) => id);
  if (msg.method !== 'client.hello' || !opts || JSON.stringify(opts.withArgs) !== '["node"]'
      || opts.responseCallback !== '[Function]' || !opts.kite || ids.length !== 1) {
    reverse.bad = text;
    return;
  }
  reverse.caller = opts.kite.name;
  sock.send(ok(Number(ids[0]), `hello ${opts.withArgs[0]}`));
}

const sock = new SockJS(url, null, { transports: [transport] });

sock.onopen = () => {
  out.transport = sock.transport;
  if (sock.transport !== transport) {
    out.errors.push(`opened with transport ${sock.transport}, wanted ${transport}`);
    finish(1);
  }
  for (const c of Object.values(cases)) {
    for (const r of [].concat(c.request)) sock.send(r);
  }
};

sock.onmessage = (e) => {
  const text = e.data;
  let msg;
  try {
    msg = JSON.parse(text);
  } catch (err) {
    out.unexpected.push({ notJson: text.slice(0, 200) });
    return;
  }
  if (typeof msg.method === 'string') {
    serveRequest(sock, text, msg);
    return;
  }
  const name = owner[msg.method];
  const c = name && cases[name];
  if (!c || c.done || c.seen[msg.method].length >= c.expect[msg.method].length) {
    out.unexpected.push(text.slice(0, 200));
    return;
  }
  c.seen[msg.method].push({ text, at: arrival++ });
  if (--c.remaining === 0) judge(name);
  if (Object.values(cases).every((k) => k.done)) {
    clearTimeout(deadline);
    sock.onclose = null;
    sock.close();
    const good = out.failed.length === 0 && out.unexpected.length === 0
      && out.passed.length === Object.keys(cases).length;
    finish(good ? 0 : 1);
  }
};

sock.onclose = (e) => {
  out.errors.push(`closed: ${e.code} ${e.reason}`);
  finish(1);
};
