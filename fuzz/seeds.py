#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/.

Seeds come from the real traffic captured from Go kite, Kite.js and Go Kontrol (the golden
frames: kite-core/tests/golden/ and, where it exists, shared/reference/golden/ beside the
repository or the folders given as arguments), plus hand-made ones for what the captures do not
hold. Each seed is named by the SHA-1 of its bytes (as libFuzzer names corpus files), so running
this again adds nothing twice. Seeds are kept small and few: the targets find the rest.

    fuzz/seeds.py [GOLDEN_DIR...]

The credential seeds signed by the test Kontrol key (testdata/keys) need `openssl`.
"""

import base64
import hashlib
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
MAX_SEED = 4096
MAX_PER_TARGET = 60


class Corpus:
    def __init__(self):
        self.seeds = {}

    def add(self, target, data):
        if isinstance(data, str):
            data = data.encode()
        if len(data) > MAX_SEED:
            return
        self.seeds.setdefault(target, {})[hashlib.sha1(data).hexdigest()] = data

    def write(self):
        for target, seeds in sorted(self.seeds.items()):
            folder = os.path.join(CORPUS, target)
            os.makedirs(folder, exist_ok=True)
            # Shortest first, so the cap keeps the variety of small frames.
            chosen = sorted(seeds.items(), key=lambda kv: (len(kv[1]), kv[0]))[:MAX_PER_TARGET]
            for name, data in chosen:
                with open(os.path.join(folder, name), "wb") as f:
                    f.write(data)
            print(f"{target}: {len(chosen)} seeds")


def golden_events(dirs):
    seen = set()
    for d in dirs:
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            if not name.endswith(".jsonl") or name in seen:
                continue
            seen.add(name)
            with open(os.path.join(d, name), encoding="utf-8") as f:
                for line in f:
                    yield json.loads(line)


def walk(value):
    yield value
    if isinstance(value, dict):
        for v in value.values():
            yield from walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from walk(v)


def dnode_messages(frame):
    """The dnode messages (JSON text) inside a SockJS frame or client frame."""
    body = frame[1:] if frame[:1] == "a" else frame
    try:
        msgs = json.loads(body)
    except ValueError:
        return []
    return [m for m in msgs if isinstance(m, str)] if isinstance(msgs, list) else []


def from_golden(corpus, dirs):
    for e in golden_events(dirs):
        payload = e.get("payload") or ""
        kind, direction = e["kind"], e["dir"]
        http = e.get("http") or {}
        frames = []
        if kind == "ws-message":
            frames = [payload]
        elif kind == "http-response" and e["transport"] in ("xhr", "xhr_streaming"):
            frames = [line for line in payload.split("\n") if line and set(line) != {"h"}]
        elif kind == "http-request" and e["transport"] == "xhr":
            frames = [payload] if payload else []
        if kind == "http-request" and http.get("path"):
            method = http.get("method", "GET")
            methods = ["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "HEAD", "BREW"]
            index = methods.index(method) if method in methods else 7
            origin = dict((k.lower(), v) for k, v in http.get("headers", [])).get("origin", "")
            path = http["path"]
            # Relative to the SockJS router, which a kite nests at /kite.
            if path.startswith("/kite"):
                path = path[len("/kite"):] or "/"
            corpus.add("sockjs_paths", bytes([index, 0]) + f"{path}\n{origin}".encode())
        for frame in frames:
            if direction == "s2c":
                corpus.add("sockjs_frames", "S" + frame)
                if frame[:1] == "a":
                    corpus.add("json_strings", "L" + frame[1:])
                elif frame[:1] == "c":
                    corpus.add("json_strings", "X" + frame[1:])
            else:
                corpus.add("sockjs_frames", "C" + frame)
                corpus.add("json_strings", "L" + frame)
            for msg in dnode_messages(frame):
                corpus.add("json_strings", "P" + json.dumps(msg))
                corpus.add("json_strings", "E" + msg)
                corpus.add("dnode_message", msg)
                try:
                    value = json.loads(msg)
                except ValueError:
                    continue
                if isinstance(value, dict) and isinstance(value.get("callbacks"), dict):
                    paths = "\n".join(json.dumps(p) for p in value["callbacks"].values())
                    args = json.dumps(value.get("arguments"), separators=(",", ":"))
                    corpus.add("dnode_value", args + ("\n" + paths if paths else ""))
                for v in walk(value):
                    if not isinstance(v, dict):
                        continue
                    if v.get("type") == "token" and isinstance(v.get("key"), str):
                        corpus.add("credentials", "T" + v["key"])
                    if v.get("type") == "kiteKey" and isinstance(v.get("key"), str):
                        corpus.add("credentials", "K" + v["key"])
                    if isinstance(v.get("url"), str) and v["url"].startswith("http"):
                        corpus.add("client_urls", v["url"])
                    fields = ("username", "environment", "name", "version", "region", "hostname", "id")
                    if any(k in v for k in fields) and all(isinstance(v.get(k, ""), str) for k in fields):
                        kite = "/" + "/".join(v.get(k, "") for k in fields)
                        corpus.add("identity", json.dumps(v, separators=(",", ":")) + "\n" + kite)
                        if v.get("version"):
                            corpus.add("version", v["version"])


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed_jwt(claims):
    """A JWT signed (RS256) by the test Kontrol key, or None without openssl."""
    header = b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode()
    key = os.path.join(ROOT, "testdata", "keys", "kontrol.pem")
    try:
        sig = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", key],
            input=signing_input, capture_output=True, check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{header}.{payload}.{b64(sig)}"


def hand_made(corpus):
    for frame in ["o", "h", "a[]", 'a["x"]', 'c[3000,"Go away!"]', 'm"x"', "o\n", "x", ""]:
        corpus.add("sockjs_frames", "S" + frame)
    for frame in ['["a","b"]', '"a"', "", " ", "[]", '["\\u00e9\\ud83d\\ude00"]']:
        corpus.add("sockjs_frames", "C" + frame)
    corpus.add("sockjs_frames", b"E" + bytes(range(64)))
    for text in ['["a\\"b\\\\c\\/\\b\\f\\n\\r\\t\\u0041"]', '["\\ud83d\\ude00","\\ud800"]', "[ ]"]:
        corpus.add("json_strings", "L" + text)
    for text in ['[3000,"Go away!"]', '[03000,"x"]', '[-0,"x"]', '[1e3,"x"]', '[65536,"x"]']:
        corpus.add("json_strings", "X" + text)
    for text in ["<a href='x'>&</a>\u2028\u2029\u200c\ufff0\x00\x1f\"\\", "plain text " * 4]:
        corpus.add("json_strings", "E" + text)

    for msg in [
        '{"method":"m","arguments":[{"withArgs":[1,"[Function]",{"f":"[Function]"}],"responseCallback":"[Function]"}],"callbacks":{"0":[0,"responseCallback"],"1":[0,"withArgs",1],"2":["0","withArgs","2","f"]}}',
        '{"method":0,"arguments":[{"error":null,"result":{"a":"[Function]"}}],"callbacks":{"3":[0,"result","a"]}}',
        '{"method":5,"arguments":[[[[[1]]]],"[Function]"],"callbacks":{"9":[1],"8":[0,0,0,0,0]}}',
        '{"method":"m","arguments":[{"withArgs":7,"authentication":{"type":"token","key":"k"}}],"callbacks":{}}',
        '{"method":0,"arguments":[null,"node-style"]}',
        '{"method":"m","arguments":[1,2],"callbacks":{"0":[0,"responseCallback"]}}',
        '{"method":"x","arguments":[{"withArgs":["\\u0000kite-callback:0"]}],"callbacks":{"0":[0,"responseCallback"]}}',
    ]:
        corpus.add("dnode_message", msg)
    for value in ['[1,{"a":[true,null],"b":"x"}]\n[0]\n[1,"a",0]\n["1","b"]\n[2]\n[1,"a"]',
                  '[[[["[Function]"]]]]\n[0,0,0,0]\n[0,0,0,0,0]', '{"k":[1,2,3]}\n["k",2]\n["k","1"]', '7']:
        corpus.add("dnode_value", value)

    corpus.add("identity", "/alice//math\n/alice/prod/math/1.2.3/eu/host1/k1\n/alice/dev/math/2.0.0/us/h/k2")
    corpus.add("identity", "/alice/prod/math/~> 1.1\n/alice/prod/math/1.2.3/eu/host1/k1")
    corpus.add("identity", '{"id":"k1"}\n/a/b/c/1.0.0/r/h/k1\n{"name":"x","username":"y"}')
    corpus.add("identity", "/a/b/c/d/e/f/g/h\n/bob\n")

    for text in [">= 1.0, < 2\n1.4.2\n2.0.0", "~> 1.1\n1.2.3\n2.0", "~> 1.1.3\n1.1.9\n1.2.0",
                 "!= 1.0.0\n1.0.0\n1.0.1", "= 1.0\nv1.0.0+build.7\n1.0.0-beta.1",
                 "~> 1.0.0.0\n2\n1.0.0.0.1", "1.0.0-alpha.2\n1.0.0-alpha.10\n1.0.0-2\n1.0.0-alpha"]:
        corpus.add("version", text)

    for text in ["15s", "1m30s", "250ms", "1.5h", "0", "100us", "100µs", "1h2m3s4ms5us6ns",
                 ".5s", "5.s", "-1s", "+1s", "2562047h47m16.854775807s", " 10s ", "1.0000000001s"]:
        corpus.add("go_duration", text)

    for url in ["http://127.0.0.1:6000/kite", "https://koding.com/kloud/kite?x=1#f", "ws://[::1]:80/",
                "wss://h", "HTTP://Host:443/a//", "http://user:pw@h/k", "ftp://h/", "http://"]:
        corpus.add("client_urls", url)

    for path in ["/", "/info", "/websocket", "/iframe.html", "/iframe-0.1.2.html?t=1",
                 "/123/abc/xhr", "/a.b/c/xhr", "/1/2/jsonp_send", "/1/2/eventsource", "/x/y/z/xhr"]:
        for method in (0, 3, 4):
            corpus.add("sockjs_paths", bytes([method, 1]) + f"{path}\nhttp://o\nJSESSIONID=abc; x=y\nX-Requested-With".encode())

    # sockjs_server: byte 0 seeds the server, then each byte picks a call (see
    # kite-core/src/fuzzing/sockjs_server.rs) and the next ones its arguments.
    poll, stream, send, anything, app_send, app_close, gone, wait, upgrade, text, closed = (
        0, 1, 2, 4, 5, 7, 8, 9, 10, 11, 12)
    corpus.add("sockjs_server", bytes([0, poll, 0, 0, 0, app_send, 0, 2, poll, 0, 0, 0, wait, 255,
                                       send, 0, 2, 1, 2, 0, 0, 0, poll, 0, 0, 0, wait, 60]))
    corpus.add("sockjs_server", bytes([1, stream, 1, 1, 0, app_send, 0, 3, app_send, 0, 1, app_send, 0, 0,
                                       stream, 1, 0, 1, wait, 20, gone, 0, poll, 1, 0, 0, wait, 200]))
    corpus.add("sockjs_server", bytes([2, upgrade, 1, 0, 0, 1, text, 0, 0, 2, app_send, 0, 1, wait, 100,
                                       text, 0, 1, 5]) + b'["x' + bytes([app_close, 0, 0, closed, 0]))
    corpus.add("sockjs_server", bytes([3, anything, 1, 9]) + b"/1/a/xhr" + bytes([0, anything, 2, 14])
               + b"/info?t=1&x=%2e" + bytes([0, poll, 0, 0, 1, poll, 0, 1, 1, poll, 0, 0, 0]))
    rng = __import__("random").Random(7)
    for _ in range(8):
        corpus.add("sockjs_server", bytes(rng.randrange(256) for _ in range(rng.randrange(64, 512))))

    # webrtc_signal: signalling messages of the shapes Go's protocol/webrtc.go reads, and relay
    # runs (`R`, then a byte per peer action).
    for text in (
        '{"type":"offer","dst":"b","payload":{"sdp":{"type":"offer","sdp":"v=0\\r\\n"},"connectionId":"c1","browser":"chrome"}}',
        '{"type":"ANSWER","src":"x","dst":"a","payload":{"sdp":{"type":"answer","sdp":"v=0"},"reliable":true}}',
        '{"type":"candidate","dst":"a","payload":{"candidate":{"candidate":"candidate:1 1 udp 2 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}}}',
        '{"type":"leave","dst":"b","payload":{"msg":"bye","label":"kite","serialization":"json"}}',
        '{"type":"hello"}',
    ):
        corpus.add("webrtc_signal", text)
    corpus.add("webrtc_signal", b"R" + bytes([4, 9, 8, 13, 0, 21, 6, 3, 2, 1]))

    # watch_change: watch events between Kontrols, as NOTIFY payloads or etcd values carry them.
    for text in (
        '{"action":"REGISTER","kite":{"username":"alice","environment":"prod","name":"math","version":"1.0.0","region":"eu","hostname":"h","id":"k1"},"url":"http://127.0.0.1:9/kite","origin":"kontrol-1"}',
        '{"action":"DEREGISTER","kite":{"username":"alice","environment":"prod","name":"math","version":"1.0.0","region":"eu","hostname":"h","id":"k1"},"origin":"o"}',
        '{"action":"REGISTER","kite":{"username":"","environment":"","name":"","version":"","region":"","hostname":"","id":""},"origin":""}',
        '{"action":"HELLO"}',
    ):
        corpus.add("watch_change", text)

    # etcd_v2_dump: Go Kontrol's etcd v2 registry as `GET /v2/keys/kites?recursive=true` answers.
    value = '{\\"url\\":\\"http://10.0.0.1:6000/kite\\",\\"key_id\\":\\"kp1\\"}'
    corpus.add("etcd_v2_dump", '{"action":"get","node":{"key":"/kites","dir":true,"nodes":['
               '{"key":"/kites/alice/prod/math/1.0.0/eu/h1/k1","value":"' + value + '","ttl":90},'
               '{"key":"/kites/k1","value":"' + value + '"}]}}')
    corpus.add("etcd_v2_dump", '{"node":{"key":"/kites/a/b/c/1.0.0/r/h%2F1/i","value":"{}"}}')

    now = 1_800_000_000
    token = signed_jwt({"aud": "/alice/prod/math", "exp": 4_102_444_800, "iat": now, "iss": "kontrol",
                        "jti": "j1", "nbf": now, "sub": "bob"})
    if token:
        corpus.add("credentials", "T" + token)
    pub = open(os.path.join(ROOT, "testdata", "keys", "kontrol.pub.pem")).read()
    kite_key = signed_jwt({"iss": "kontrol", "jti": "k1", "kontrolKey": pub,
                           "kontrolURL": "http://127.0.0.1:4000/kite", "sub": "bob"})
    if kite_key:
        corpus.add("credentials", "K" + kite_key)
    corpus.add("credentials", "T" + "eyJhbGciOiJub25lIn0.eyJzdWIiOiJib2IifQ.")
    corpus.add("credentials", b"C" + bytes(range(96)))
    corpus.add("credentials", b"F" + bytes(range(128)))


def main():
    dirs = sys.argv[1:] or [
        os.path.join(ROOT, "kite-core", "tests", "golden"),
        os.path.join(ROOT, "kontrol", "tests", "golden"),
        os.path.join(os.path.dirname(ROOT), "shared", "reference", "golden"),
    ]
    corpus = Corpus()
    from_golden(corpus, dirs)
    hand_made(corpus)
    corpus.write()


if __name__ == "__main__":
    main()
