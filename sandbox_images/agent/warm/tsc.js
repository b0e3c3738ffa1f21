'use strict';
// runbox's warm start for TypeScript's compile step, made into a V8 startup snapshot when the
// image is built (`node --snapshot-blob /opt/runbox/warm/tsc.blob --build-snapshot tsc.js sh -c
// SCRIPT`, SCRIPT being the language's own `exec tsc OPTIONS FILES`). Building it loads the
// compiler /usr/bin/tsc runs, then compiles a small program in memory with SCRIPT's options, so
// that the standard library's declaration files and /opt/runbox/node-globals.d.ts are parsed
// and bound; the snapshot holds that heap. The agent's prepare_warm starts
// `node --snapshot-blob /opt/runbox/warm/tsc.blob -- FD` before the job arrives: it reads the
// compile command's arguments (`-c SCRIPT [sh OPTIONS...]`, NUL-separated) from pipe FD, lets
// sh expand their words exactly as the cold command's shell would, and runs tsc's own command
// line on them: the same diagnostics, emitted files and exit status. All the snapshot carries
// into a job is those read-only files' syntax trees, reused only for a program with the same
// options and the same text read from the file, as tsc's watch mode and editors reuse them.
const fs = require('fs');
const path = require('path');
const v8 = require('v8');

const TSC = '/usr/share/nodejs/typescript/lib/tsc.js';
const LIB_DIR = path.dirname(TSC) + '/';
const SHARED = new Set(['/opt/runbox/node-globals.d.ts']);
const RUN_TSC = 'ts.executeCommandLine(ts.sys, ts.noop, ts.sys.args);\n';

// tsc.js runs its command line as its last statement: everything before it is loaded, under
// its own file name (tsc finds its lib directory from it). Node's perf_hooks cannot be carried
// in a snapshot, so tsc is loaded without them and times its phases (--diagnostics) with
// Date.now, as it does wherever they are missing.
const loadCompiler = () => {
  const source = fs.readFileSync(TSC, 'utf8');
  if (!source.endsWith(RUN_TSC)) throw new Error(`${TSC} does not end as expected`);
  const module = { exports: {} };
  const load = new Function('exports', 'require', 'module', '__filename', '__dirname',
    `${source.slice(0, -RUN_TSC.length)}module.exports = ts;\n`);
  const hidden = { performance: globalThis.performance, PerformanceObserver: globalThis.PerformanceObserver };
  delete globalThis.performance;
  delete globalThis.PerformanceObserver;
  const withoutPerfHooks = (name) => {
    if (name === 'perf_hooks') throw new Error('perf_hooks cannot be in a snapshot');
    return require(name);
  };
  try {
    load(module.exports, withoutPerfHooks, module, TSC, path.dirname(TSC));
  } finally {
    Object.assign(globalThis, hidden);
  }
  return module.exports;
};
const ts = loadCompiler();

// Syntax trees of read-only files only, per set of compiler options and the exact text read.
const trees = new Map();
const createHost = ts.createCompilerHostWorker;
ts.createCompilerHostWorker = (options, setParentNodes, system) => {
  const host = createHost(options, setParentNodes, system);
  const getSourceFile = host.getSourceFile;
  const settings = JSON.stringify(options);
  host.getSourceFile = (fileName, languageVersionOrOptions, onError, fresh) => {
    const name = path.resolve(fileName);
    if (fresh || !(name.startsWith(LIB_DIR) || SHARED.has(name))) {
      return getSourceFile(fileName, languageVersionOrOptions, onError, fresh);
    }
    const version = typeof languageVersionOrOptions === 'object'
      ? [languageVersionOrOptions.languageVersion, languageVersionOrOptions.impliedNodeFormat]
      : [languageVersionOrOptions];
    const key = JSON.stringify([settings, name, setParentNodes, ...version]);
    const text = system.readFile(fileName);
    const known = trees.get(key);
    if (known !== undefined && text !== undefined && known.text === text) return known;
    const tree = getSourceFile(fileName, languageVersionOrOptions, onError, fresh);
    if (tree !== undefined) trees.set(key, tree);
    return tree;
  };
  return host;
};

// The words sh gives tsc for `-c SCRIPT [sh OPTIONS...]`, or null for another command.
const tscWords = (argv) => {
  if (argv.length < 2 || argv[0] !== '-c' || !argv[1].startsWith('exec tsc ')) return null;
  const script = `exec printf '%s\\0' ${argv[1].slice('exec tsc '.length)}`;
  const shown = require('child_process').spawnSync('/bin/sh', ['-c', script, ...argv.slice(2)], {
    stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 26,
  });
  if (shown.status !== 0 || shown.stdout === null) return null;
  return shown.stdout.toString().split('\0').slice(0, -1);
};

// A small program compiled in memory with the options of the command given: nothing is
// written, and the trees of the library files it read stay.
const SAMPLE = '/opt/runbox/warm/sample.ts';
const SAMPLE_TEXT = [
  'interface Shape { area(): number; name?: string }',
  'enum Kind { Circle, Square }',
  'abstract class Base<T> implements Shape { constructor(protected readonly value: T) {} abstract area(): number }',
  'class Circle extends Base<number> { area() { return Math.PI * this.value ** 2 } }',
  'const shapes: Shape[] = [new Circle(2)];',
  'const byKind = new Map<Kind, Shape[]>([[Kind.Circle, shapes]]);',
  'async function total(list: readonly Shape[]): Promise<number> {',
  '  let sum = 0; for (const { area } of list.map((s) => ({ area: s.area() }))) sum += area;',
  '  return sum }',
  'type Pair<A, B> = [A, B]; const pair: Pair<string, number> = ["a", 1];',
  'function pick<T, K extends keyof T>(o: T, k: K): T[K] { return o[k] }',
  'total(byKind.get(Kind.Circle) ?? []).then((t) => console.log(`${t.toFixed(2)} ${pair[0]}`, pick({ a: 1 }, "a")));',
  'const wrong: number = "not a number"; export {};',
].join('\n');
const prepare = (argv) => {
  // No child process may be started while a snapshot is made: SCRIPT's words are split here
  // as sh would split these plain words (a difference would only make the trees go unused).
  if (argv.length !== 2 || argv[0] !== '-c' || !argv[1].startsWith('exec tsc ')) {
    throw new Error(`not a tsc command: ${JSON.stringify(argv)}`);
  }
  const words = argv[1].slice('exec tsc '.length).split(/\s+/);
  const parsed = ts.parseCommandLine(words);
  if (parsed.errors.length > 0) throw new Error(ts.formatDiagnostics(parsed.errors, ts.createCompilerHost({})));
  const host = ts.createCompilerHostWorker(parsed.options, undefined, ts.sys);
  const getSourceFile = host.getSourceFile;
  host.getSourceFile = (fileName, version, ...rest) => (path.resolve(fileName) === SAMPLE
    ? ts.createSourceFile(fileName, SAMPLE_TEXT, version) : getSourceFile(fileName, version, ...rest));
  host.writeFile = () => {};
  const roots = parsed.fileNames.filter((name) => SHARED.has(path.resolve(name)));
  const program = ts.createProgram({ rootNames: [...roots, SAMPLE], options: parsed.options, host });
  const diagnostics = [];
  ts.emitFilesAndReportErrorsAndGetExitStatus(program, (d) => diagnostics.push(d), () => {});
  ts.formatDiagnostics(diagnostics, host);
};

// The job: its command's arguments from the pipe, then tsc's command line on their words.
const main = () => {
  const control = Number(process.argv[process.argv.length - 1]);
  const chunks = [];
  const buffer = Buffer.alloc(65536);
  for (let n; (n = fs.readSync(control, buffer, 0, buffer.length, null)) > 0;) {
    chunks.push(Buffer.from(buffer.subarray(0, n)));
  }
  fs.closeSync(control);
  if (chunks.length === 0) process.reallyExit(0);
  const argv = Buffer.concat(chunks).toString().split('\0');
  const words = tscWords(argv);
  if (words === null) {
    // Not the command this stub stands in for: run it as given.
    const cold = require('child_process').spawnSync('/bin/sh', argv, { stdio: 'inherit' });
    if (cold.signal) process.kill(process.pid, cold.signal);
    process.exit(cold.status === null ? 1 : cold.status);
  }
  if (ts.sys.setBlocking) ts.sys.setBlocking();
  ts.executeCommandLine(ts.sys, ts.noop, words);
};

prepare(process.argv.slice(3));
v8.startupSnapshot.setDeserializeMainFunction(main);
