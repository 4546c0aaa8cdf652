// The package's TypeScript declarations (kite-wasm/js/kite.d.ts, server.d.ts and webrtc.d.ts, installed by
// scripts/build-wasm as pkg/web/kite.d.ts, pkg/server/index.d.ts and pkg/web/webrtc.d.ts):
//   1. the sample programs of tests/js/types compile under tsc --strict, and every line they
//      mark @ts-expect-error is rejected;
//   2. they compile too against the package resolved the way an installed one is (its
//      package.json `exports`), and tsc does fail on them once a rejected line is let in;
//   3. the declarations name what the built modules export: every export, every method and
//      getter of every exported class, every key of every exported object, and nothing that
//      is not there.
// Needs the package built (scripts/build-wasm; scripts/test-wasm builds it first), not the
// fixture kites.

import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const jsRoot = path.resolve(here, '..');
const repoRoot = path.resolve(jsRoot, '../..');
const pkg = path.resolve(process.env.KITE_WASM_PKG ?? path.join(repoRoot, 'kite-wasm/pkg'));
const typesDir = path.join(jsRoot, 'types');
const require = createRequire(import.meta.url);
const ts = require('typescript');
const tsc = require.resolve('typescript/bin/tsc');


const built = [
  'package.json',
  'web/kite.js',
  'web/kite.d.ts',
  'node/index.js',
  'node/index.d.ts',
  'server/index.js',
  'server/index.d.ts',
  'web/webrtc.js',
  'web/webrtc.d.ts',
];

before(() => {
  const missing = built.filter((f) => !fs.existsSync(path.join(pkg, f)));
  if (missing.length) {
    throw new Error(`the package is not built (no ${missing.join(', ')} in ${pkg}): run scripts/build-wasm`);
  }
  // The build installed the hand-written declarations (a package built before they existed,
  // or from other sources, would be checked instead of them).
  for (const [built, source] of [
    ['web/kite.d.ts', 'kite-wasm/js/kite.d.ts'],
    ['server/index.d.ts', 'kite-wasm/js/server.d.ts'],
    ['web/webrtc.d.ts', 'kite-wasm/js/webrtc.d.ts'],
    ['web/webrtc.js', 'kite-wasm/js/webrtc.js'],
  ]) {
    const a = fs.readFileSync(path.join(pkg, built), 'utf8');
    const b = fs.readFileSync(path.join(repoRoot, source), 'utf8');
    if (a !== b) throw new Error(`${pkg}/${built} is not ${source}: run scripts/build-wasm`);
  }
});

function runTsc(args, cwd = repoRoot) {
  const r = spawnSync(process.execPath, [tsc, '--pretty', 'false', ...args], { cwd, encoding: 'utf8' });
  if (r.error) throw r.error;
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

test('tsc --strict accepts the samples and rejects every @ts-expect-error line (tests/js/types)', () => {
  const { status, output } = runTsc(['-p', typesDir]);
  assert.equal(status, 0, `tsc -p tests/js/types failed:\n${output}`);
  // Both samples do mark lines to be rejected (tsc would pass a sample that marked none).
  for (const sample of ['client.ts', 'server.ts', 'webrtc.ts']) {
    const marks = fs.readFileSync(path.join(typesDir, sample), 'utf8').match(/@ts-expect-error/g) ?? [];
    assert.ok(marks.length >= 5, `${sample} marks only ${marks.length} lines @ts-expect-error`);
  }
});

/** A directory holding the samples beside a node_modules with the package (a symlink to
 *  `pkg`) and Node's types, and a tsconfig without `paths`: the package resolves through its
 *  package.json as an installed one does. */
function installedCopy() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kite-types-'));
  fs.mkdirSync(path.join(dir, 'node_modules'));
  fs.symlinkSync(pkg, path.join(dir, 'node_modules/kite-wasm'), 'dir');
  fs.symlinkSync(path.join(jsRoot, 'node_modules/@types'), path.join(dir, 'node_modules/@types'), 'dir');
  fs.writeFileSync(path.join(dir, 'package.json'), '{ "type": "module" }\n');
  const config = ts.parseConfigFileTextToJson('tsconfig.json', fs.readFileSync(path.join(typesDir, 'tsconfig.json'), 'utf8'));
  assert.ifError(config.error);
  delete config.config.compilerOptions.paths;
  fs.writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify(config.config, null, 2));
  for (const f of config.config.files) fs.copyFileSync(path.join(typesDir, f), path.join(dir, f));
  return dir;
}

test('the samples compile against the package resolved through its exports, and tsc fails on wrong lines', (t) => {
  const dir = installedCopy();
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));

  const ok = runTsc(['-p', dir, '--listFiles'], dir);
  assert.equal(ok.status, 0, `tsc failed on the samples against node_modules/kite-wasm:\n${ok.output}`);
  const listed = ok.output.split('\n').map((l) => l.trim());
  const real = fs.realpathSync(pkg);
  for (const f of ['node/index.d.ts', 'web/kite.d.ts', 'server/index.d.ts', 'web/webrtc.d.ts']) {
    assert.ok(listed.includes(path.join(real, f)), `tsc did not read ${f} of the package:\n${ok.output}`);
  }

  // Now break the samples: let two rejected lines in, mark a correct line as an error, add a
  // wrong one. tsc must report each, at its line.
  const edit = (file, f) => {
    const p = path.join(dir, file);
    fs.writeFileSync(p, f(fs.readFileSync(p, 'utf8').split('\n')).join('\n'));
  };
  const expected = [];
  const unmark = (file, marker, what) =>
    edit(file, (lines) => {
      const i = lines.findIndex((l) => l.startsWith(`// @ts-expect-error: ${marker}`));
      assert.ok(i >= 0, `no "${marker}" line in ${file}`);
      lines[i] = '// (no longer expected to fail)';
      expected.push({ file, line: i + 2, what });
      return lines;
    });
  unmark('client.ts', 'a misspelt option', /autoconect/);
  unmark('server.ts', 'a misspelt server option', /nmae/);
  edit('client.ts', (lines) => {
    lines.push('// @ts-expect-error: this line is correct, so the directive is unused', "kite.on('open', () => {});");
    expected.push({ file: 'client.ts', line: lines.length - 1, what: /TS2578/ });
    lines.push("const port: number = new Kite('http://x/kite').url;");
    expected.push({ file: 'client.ts', line: lines.length, what: /TS2322/ });
    return lines;
  });
  const bad = runTsc(['-p', dir], dir);
  assert.notEqual(bad.status, 0, `tsc accepted the broken samples:\n${bad.output}`);
  for (const { file, line, what } of expected) {
    const at = bad.output.split('\n').filter((l) => l.startsWith(`${file}(${line},`));
    assert.ok(at.some((l) => what.test(l)), `tsc reported no ${what} at ${file}:${line}:\n${bad.output}`);
  }
});

/** What a declaration file exports, read with the compiler: by name, whether it is a value,
 *  and for classes the instance and static member names, for objects their keys. */
function declarations(file) {
  const program = ts.createProgram([file], {
    strict: true,
    noEmit: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    lib: ['lib.es2022.d.ts', 'lib.dom.d.ts'],
    types: ['node'],
    typeRoots: [path.join(jsRoot, 'node_modules/@types')],
  });
  const diagnostics = ts.getPreEmitDiagnostics(program);
  assert.equal(
    diagnostics.length,
    0,
    ts.formatDiagnostics(diagnostics, { getCanonicalFileName: (f) => f, getCurrentDirectory: () => repoRoot, getNewLine: () => '\n' }),
  );
  const checker = program.getTypeChecker();
  const module = checker.getSymbolAtLocation(program.getSourceFile(file));
  assert.ok(module, `${file} is not a module`);
  const names = (type, required = false) =>
    new Set(
      checker
        .getPropertiesOfType(type)
        .filter((p) => !p.name.startsWith('__@') && !(required && p.flags & ts.SymbolFlags.Optional))
        .map((p) => p.name),
    );
  const out = new Map();
  for (const exported of checker.getExportsOfModule(module)) {
    const s = exported.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(exported) : exported;
    const entry = { value: (s.flags & ts.SymbolFlags.Value) !== 0 };
    if (s.flags & ts.SymbolFlags.Class) {
      entry.members = names(checker.getDeclaredTypeOfSymbol(s));
      // Optional members (Error's `stack` and `cause`, say) need not be there at runtime.
      entry.required = names(checker.getDeclaredTypeOfSymbol(s), true);
      entry.statics = names(checker.getTypeOfSymbolAtLocation(s, s.valueDeclaration));
    } else if (s.flags & ts.SymbolFlags.Variable) {
      entry.keys = names(checker.getTypeOfSymbolAtLocation(s, s.valueDeclaration));
    }
    out.set(exported.name, entry);
  }
  return out;
}

const isClass = (v) => typeof v === 'function' && /^class\b/.test(Function.prototype.toString.call(v));
const internal = (n) => n.startsWith('__') || ['constructor', 'length', 'name', 'prototype'].includes(n);

/** Own names along `o`'s prototype chain up to (not including) Object.prototype or Function.prototype. */
function chainNames(o) {
  const seen = new Set();
  for (let p = o; p && p !== Object.prototype && p !== Function.prototype; p = Object.getPrototypeOf(p)) {
    for (const n of Object.getOwnPropertyNames(p)) if (!internal(n)) seen.add(n);
  }
  return seen;
}

/** Checks one module against its declarations; `samples` makes an instance of a class (for
 *  the declared fields that live on instances, not prototypes). */
function compare(label, runtime, declared, samples) {
  const problems = [];
  for (const [name, value] of Object.entries(runtime)) {
    const d = declared.get(name);
    if (!d || !d.value) {
      problems.push(`${name} is exported but not declared as a value`);
      continue;
    }
    if (isClass(value)) {
      for (const m of Object.getOwnPropertyNames(value.prototype).filter((n) => !internal(n))) {
        if (!d.members?.has(m)) problems.push(`${name}.prototype.${m} is not declared`);
      }
      for (const m of Object.getOwnPropertyNames(value).filter((n) => !internal(n))) {
        if (!d.statics?.has(m)) problems.push(`static ${name}.${m} is not declared`);
      }
      const instance = samples[name]?.();
      const has = instance ? chainNames(instance) : chainNames(value.prototype);
      if (instance) for (const n of Object.keys(instance)) has.add(n);
      for (const m of d.required ?? []) {
        if (!has.has(m)) problems.push(`${name}#${m} is declared but not there`);
      }
      for (const m of d.statics ?? []) {
        if (!(m in value)) problems.push(`static ${name}.${m} is declared but not there`);
      }
      instance?.free?.();
    } else if (value && typeof value === 'object') {
      for (const k of Object.keys(value)) {
        if (!d.keys?.has(k)) problems.push(`${name}.${k} is not declared`);
      }
    }
  }
  for (const [name, d] of declared) {
    if (d.value && !(name in runtime)) problems.push(`${name} is declared but not exported`);
  }
  assert.deepEqual(problems, [], `${label}: the declarations do not match the module:\n  ${problems.join('\n  ')}`);
}

test('the declarations name every export, method and getter of the built modules', async () => {
  const url = (f) => pathToFileURL(path.join(pkg, f)).href;
  // The Node entry point instantiates the module (which defines Kite.prototype.tell).
  const nodeEntry = await import(url('node/index.js'));
  const web = await import(url('web/kite.js'));
  const server = await import(url('server/index.js'));
  const webrtc = await import(url('web/webrtc.js'));
  const offline = { url: 'http://127.0.0.1:9/kite', autoConnect: false };
  const clientSamples = (m) => ({
    Kite: () => new m.Kite(offline),
    Kontrol: () => new m.Kontrol(offline),
    KiteError: () => new m.KiteError('sample', 'genericError', 'E1', 'id'),
  });

  compare('web', web, declarations(path.join(pkg, 'web/kite.d.ts')), clientSamples(web));
  compare('node', nodeEntry, declarations(path.join(pkg, 'node/index.d.ts')), clientSamples(nodeEntry));
  compare('server', server, declarations(path.join(pkg, 'server/index.d.ts')), {
    ...clientSamples(server),
    KiteServer: () => new server.KiteServer({ kiteKey: false, logLevel: 'none' }),
  });
  compare('webrtc', webrtc, declarations(path.join(pkg, 'web/webrtc.d.ts')), {
    KiteWebRTC: () => new webrtc.KiteWebRTC({ relay: new nodeEntry.Kite(offline) }),
  });
});
