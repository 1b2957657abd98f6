/**
 * The packed package installs and runs without a compiler: `npm run prebuild`, `npm pack`, then
 * `npm install <tarball>` in a temporary project whose PATH holds node, npm and sh, with cmake, make and the C
 * and C++ compilers replaced by stubs that record the call and fail. A smoke script there computes a bootstrapped
 * loss and its gradient and compares them with values computed here in plain JavaScript.
 *
 * Slow (a prebuild, a pack and an install: one to three minutes). BCE_SKIP_PACK_TEST=1 skips it.
 */
import { spawnSync, SpawnSyncReturns } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const root = path.resolve(__dirname, '..');
const platformDir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
const skip = process.env.BCE_SKIP_PACK_TEST === '1' || process.platform === 'win32';
if (skip) console.warn('pack test skipped: BCE_SKIP_PACK_TEST=1 or Windows');
const describeIf = skip ? describe.skip : describe;

/** One flavour's entry in prebuilds/<platform>-<arch>/libtorch.json (scripts/prebuild.js). */
interface PrebuildRecord {
  binary: string;
  version: string;
  cuda: boolean | string;
  cxx11Abi: boolean | null;
  libDir: string;
  needed: string[];
}

/** The environment of a child npm: no npm_* variables of the npm running jest, no LibTorch or binary choice. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (/^npm_/i.test(key) || /^(BOOTSTRAPPED_CE_|LIBTORCH$|Torch_DIR$|INIT_CWD$)/.test(key)) continue;
    env[key] = value;
  }
  return { ...env, ...extra };
}

function run(
  command: string,
  args: string[],
  options: { cwd: string; env?: NodeJS.ProcessEnv },
): SpawnSyncReturns<string> {
  const result = spawnSync(command, args, {
    cwd: options.cwd,
    env: options.env ?? cleanEnv({}),
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
    timeout: 8 * 60 * 1000,
  });
  if (result.status !== 0) {
    throw new Error(
      `${command} ${args.join(' ')} failed (${result.status ?? result.signal}):\n${result.stdout}\n${result.stderr}`,
    );
  }
  return result;
}

/** npm's own script (npm-cli.js), so that a PATH without /usr/bin still runs the same npm. */
function npmCli(): string {
  const execPath = process.env.npm_execpath;
  if (execPath && /npm-cli\.js$/.test(execPath)) return execPath;
  const found = spawnSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).stdout.trim();
  return fs.realpathSync(found);
}

/** A folder for PATH: node, npm, npx, sh, and failing stubs for the build tools. */
function toolFolder(dir: string, marker: string): string {
  const bin = path.join(dir, 'bin');
  fs.mkdirSync(bin, { recursive: true });
  fs.symlinkSync(npmCli(), path.join(bin, 'npm'));
  fs.symlinkSync(process.execPath, path.join(bin, 'node'));
  fs.symlinkSync('/bin/sh', path.join(bin, 'sh'));
  for (const tool of [
    'cmake',
    'make',
    'ninja',
    'cc',
    'gcc',
    'c++',
    'g++',
    'clang',
    'clang++',
    'node-gyp',
    'python3',
    'python',
  ]) {
    fs.writeFileSync(path.join(bin, tool), `#!/bin/sh\necho "${tool} $*" >> "${marker}"\nexit 1\n`, { mode: 0o755 });
  }
  return bin;
}

/** Cross-entropy per row, the hardest k rows' mean, and its gradient, in float64 JavaScript. */
function expected(logits: number[][], target: number[], k: number): { loss: number; grad: number[][] } {
  const rows = logits.map((row, i) => {
    const max = Math.max(...row);
    const exps = row.map((x) => Math.exp(x - max));
    const sum = exps.reduce((a, b) => a + b, 0);
    const softmax = exps.map((e) => e / sum);
    return { i, loss: -(row[target[i]] - max - Math.log(sum)), softmax };
  });
  const chosen = new Set(
    [...rows]
      .sort((a, b) => b.loss - a.loss)
      .slice(0, k)
      .map((r) => r.i),
  );
  const loss = rows.filter((r) => chosen.has(r.i)).reduce((a, r) => a + r.loss, 0) / k;
  const grad = rows.map((r) => r.softmax.map((s, c) => (chosen.has(r.i) ? (s - (c === target[r.i] ? 1 : 0)) / k : 0)));
  return { loss, grad };
}

const LOGITS = [
  [2.0, -1.0, 0.5],
  [0.1, 0.2, 0.3],
  [-2.0, 3.0, 0.0],
  [1.5, 1.0, -0.5],
];
const TARGET = [0, 2, 0, 1];

const SMOKE = `
'use strict';
const bce = require('bootstrapped-ce');
const input = bce.tensor(${JSON.stringify(LOGITS)}, { requiresGrad: true });
const target = bce.tensor(${JSON.stringify(TARGET)}, { dtype: 'int64' });
const loss = bce.bootstrappedCrossEntropy(input, target, 1000, 0.5);
loss.backward();
process.stdout.write(JSON.stringify({
  loss: loss.item(),
  grad: Array.from(input.grad.toArray()),
  binary: bce.info().binary,
  version: bce.info().libtorchVersion,
}));
`;

describeIf('npm pack: the tarball installs and runs without a compiler', () => {
  let work: string;
  let hadPrebuilds: boolean;

  beforeAll(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'bce-pack-test-'));
    hadPrebuilds = fs.existsSync(platformDir);
  });

  afterAll(() => {
    // Leave the checkout as it was: a prebuild made here would shadow later local builds.
    if (!hadPrebuilds) fs.rmSync(platformDir, { recursive: true, force: true });
    if (work && process.env.BCE_KEEP_PACK_TEST !== '1') fs.rmSync(work, { recursive: true, force: true });
  });

  test(
    'prebuild, pack, install with cmake and compilers hidden, forward and backward',
    () => {
      const started = Date.now();
      // 1. The prebuild.
      run(process.execPath, [path.join(root, 'scripts', 'prebuild.js')], { cwd: root });
      const records: PrebuildRecord[] = JSON.parse(
        fs.readFileSync(path.join(platformDir, 'libtorch.json'), 'utf8'),
      ).prebuilds;
      expect(records.length).toBeGreaterThanOrEqual(1);
      for (const record of records) {
        expect(fs.existsSync(path.join(platformDir, record.binary))).toBe(true);
        expect(record.version).toMatch(/^\d+\.\d+/);
        expect(typeof record.cxx11Abi).toBe('boolean');
        expect(record.needed.some((lib: string) => /torch_cpu/.test(lib))).toBe(true);
      }
      expect(new Set(records.map((r) => r.binary)).size).toBe(records.length);

      // 2. The tarball (npm pack runs "prepare": the TypeScript build).
      const packed = run('npm', ['pack', '--json', '--pack-destination', work], { cwd: root });
      const info = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('[')))[0];
      const files: string[] = info.files.map((f: { path: string }) => f.path);
      const prebuildPath = `prebuilds/${process.platform}-${process.arch}`;
      const binaries = records.map((r) => `${prebuildPath}/${r.binary}`);
      expect(files).toEqual(
        expect.arrayContaining([...binaries, `${prebuildPath}/libtorch.json`, 'dist/native.js', 'scripts/install.js']),
      );
      const tarball = path.join(work, info.filename);

      // 3. A project installing it, with the build tools hidden.
      const project = path.join(work, 'project');
      fs.mkdirSync(project);
      fs.writeFileSync(
        path.join(project, 'package.json'),
        JSON.stringify({ name: 'bce-pack-smoke', version: '1.0.0', private: true }),
      );
      const marker = path.join(work, 'build-tools-called.txt');
      const bin = toolFolder(work, marker);
      const env = cleanEnv({ PATH: bin });
      expect(spawnSync('cmake', ['--version'], { env }).status).not.toBe(0);
      fs.rmSync(marker);
      const install = run(
        'npm',
        ['install', tarball, '--no-audit', '--no-fund', '--prefer-offline', '--foreground-scripts'],
        {
          cwd: project,
          env,
        },
      );
      const installLog = `${install.stdout}${install.stderr}`;
      expect(installLog).toMatch(/using the prebuild/);
      expect(fs.existsSync(marker) ? fs.readFileSync(marker, 'utf8') : '').toBe('');
      const installed = path.join(project, 'node_modules', 'bootstrapped-ce');
      expect(fs.existsSync(path.join(installed, 'build'))).toBe(false);

      // 4. The smoke test on each flavour, against values computed here: a flavour whose LibTorch is on
      //    LD_LIBRARY_PATH is the one loaded (the CUDA-build flavour runs its CPU paths on a machine without a GPU).
      fs.writeFileSync(path.join(project, 'smoke.js'), SMOKE);
      const want = expected(LOGITS, TARGET, 2);
      for (const record of records) {
        const flavourEnv = { ...env, LD_LIBRARY_PATH: record.libDir };
        const smoke = JSON.parse(run('node', ['smoke.js'], { cwd: project, env: flavourEnv }).stdout);
        expect(smoke.binary).toBe(path.join(fs.realpathSync(installed), prebuildPath, record.binary));
        expect(smoke.version).toBe(record.version);
        expect(smoke.loss).toBeCloseTo(want.loss, 5);
        want.grad.flat().forEach((g, i) => expect(smoke.grad[i]).toBeCloseTo(g, 5));

        // The ES-module entry resolves to the same build.
        const esm = run(
          'node',
          ['--input-type=module', '-e', "import { info } from 'bootstrapped-ce'; process.stdout.write(info().binary);"],
          {
            cwd: project,
            env: flavourEnv,
          },
        );
        expect(esm.stdout).toBe(smoke.binary);
        console.log(
          `pack test: LibTorch ${record.version} ${record.cuda ? 'CUDA' : 'CPU'} prebuild loaded and computed the loss`,
        );
      }
      console.log(
        `pack test: ${((Date.now() - started) / 1000).toFixed(0)} s (tarball ${(info.size / 1024).toFixed(0)} KiB)`,
      );
    },
    10 * 60 * 1000,
  );
});
