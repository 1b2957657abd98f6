#!/usr/bin/env node
// `npm install` / `npm ci` hook (and binding.gyp's action for node-gyp).
//
// 1. When run as npm's install hook: a matching prebuild (prebuilds/<platform>-<arch>/, docs/prebuilds.md)
//    that loads means nothing is compiled. The check runs in a child process (dist/native.js with BOOTSTRAPPED_CE_PREBUILDS_ONLY=1), so a binary that
//    crashes on load cannot take npm down with it.
// 2. Otherwise the addon is built from source with cmake-js: in build/cmake-js, the result copied to
//    build/Release, so that node-gyp (which owns build/Makefile) and cmake-js never write over each other. A
//    missing LibTorch or CMake gives one clear message instead of a CMake trace.
//
// Set BOOTSTRAPPED_CE_BUILD_FROM_SOURCE=1 (or pass npm's --build-from-source) to skip the prebuild.
// `require('./install.js').buildFromSource({...})` is also used by scripts/prebuild-node-gyp.js.
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.join(__dirname, '..');
const OUTPUTS = ['bootstrapped_ce.node', 'libtorch.json'];

function fail(lines) {
  process.stderr.write(`\nbootstrapped-ce: ${lines.join('\n  ')}\n\n`);
  process.exit(1);
}

function cmakeJsBin() {
  try {
    return require.resolve('cmake-js/bin/cmake-js', { paths: [root] });
  } catch {
    fail(['cmake-js is not installed. Run `npm install` in the package folder first.']);
  }
}

function hasCmake() {
  const which = spawnSync(process.platform === 'win32' ? 'where' : 'which', ['cmake'], { encoding: 'utf8' });
  if (which.status === 0) return true;
  // `which` itself may be absent from a minimal PATH: ask cmake directly.
  const direct = spawnSync('cmake', ['--version'], { encoding: 'utf8' });
  return direct.status === 0;
}

/**
 * Builds the addon with cmake-js in `outDir` and copies bootstrapped_ce.node and libtorch.json to `releaseDir`.
 * `notes`: extra lines for the failure message (e.g. why the prebuild was not used).
 */
function buildFromSource({
  outDir = path.join(root, 'build', 'cmake-js'),
  releaseDir = path.join(root, 'build', 'Release'),
  notes = [],
} = {}) {
  if (!hasCmake()) {
    fail([
      'CMake was not found, and it is needed to build the native addon.',
      ...notes,
      'Debian/Ubuntu: `sudo apt-get install cmake g++ libtorch-dev` (or run `bash scripts/setup` in a clone).',
      'Elsewhere: install CMake >= 3.19 and a C++17 compiler.',
    ]);
  }
  // An explicit LibTorch choice always configures afresh, and so does any change of the choice since the last
  // build in outDir (say LIBTORCH set then, unset now): CMake's cache would otherwise keep the earlier LibTorch.
  const explicit = process.env.LIBTORCH || process.env.Torch_DIR;
  const choice = JSON.stringify({
    LIBTORCH: process.env.LIBTORCH ?? '',
    Torch_DIR: process.env.Torch_DIR ?? '',
    PYTHON: process.env.PYTHON ?? '',
  });
  const choiceFile = path.join(outDir, 'bce-libtorch-choice.json');
  const previous = fs.existsSync(choiceFile) ? fs.readFileSync(choiceFile, 'utf8') : '';
  const fresh = explicit || previous !== choice;
  const args = [cmakeJsBin(), fresh ? 'rebuild' : 'compile', '--out', outDir, '--directory', root];
  const jobs = process.env.BCE_BUILD_JOBS;
  if (jobs) args.push('--parallel', jobs);
  const result = spawnSync(process.execPath, args, { cwd: root, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  const output = `${result.stdout || ''}${result.stderr || ''}`;
  const notFound = output.match(/BCE_LIBTORCH_NOT_FOUND: ([\s\S]*?)(\n\s*\n|Call Stack|-- Configuring incomplete)/);
  if (notFound) fail([`cannot build: ${notFound[1].replace(/\s*\n\s*/g, ' ').trim()}`, ...notes]);
  if (result.status !== 0) {
    process.stderr.write(output);
    fail(['the native build failed (output above).', ...notes]);
  }
  const used = output.match(/bootstrapped-ce: LibTorch [^\n]*/);
  if (used) process.stdout.write(`${used[0]}\n`);
  fs.writeFileSync(choiceFile, choice);
  fs.mkdirSync(releaseDir, { recursive: true });
  for (const file of OUTPUTS) {
    fs.copyFileSync(path.join(outDir, 'Release', file), path.join(releaseDir, file));
  }
  process.stdout.write(`bootstrapped-ce: built ${path.relative(root, path.join(releaseDir, OUTPUTS[0]))}\n`);
}

/** The prebuild folder of this platform, if it holds a binary. */
function prebuildFolder() {
  const folder = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  try {
    return fs.readdirSync(folder).some((name) => name.endsWith('.node')) ? folder : null;
  } catch {
    return null;
  }
}

/**
 * Loads the prebuild through the real loader in a child process and runs one tensor operation.
 * Returns { ok: true, file } or { ok: false, reason }.
 */
function checkPrebuild() {
  const loader = path.join(root, 'dist', 'native.js');
  if (!fs.existsSync(loader))
    return { ok: false, reason: `${path.relative(root, loader)} is missing (not a packed package)` };
  const script = [
    'let m;',
    `try { m = require(${JSON.stringify(loader)}); } catch (e) {`,
    // Only the lines saying what was tried and what is missing; the install message gives the remedies.
    "  const lines = String(e.message).split('\\n');",
    "  const end = lines.findIndex((l) => l.startsWith('Possible solutions'));",
    "  process.stderr.write(lines.slice(1, end < 0 ? undefined : end).map((l) => l.trim()).join('\\n'));",
    '  process.exit(1);',
    '}',
    "const t = m.native.ones([3], 'float32', 'cpu');",
    "if (t.sum().item() !== 3) throw new Error('the prebuild computed a wrong sum');",
    'process.stdout.write(JSON.stringify({ file: m.nativeBinaryPath, version: m.native.info().libtorchVersion }));',
  ].join('\n');
  const env = { ...process.env, BOOTSTRAPPED_CE_PREBUILDS_ONLY: '1' };
  delete env.BOOTSTRAPPED_CE_BINARY;
  const child = spawnSync(process.execPath, ['-e', script], { cwd: root, env, encoding: 'utf8', timeout: 120000 });
  if (child.status === 0) {
    try {
      return { ok: true, ...JSON.parse(child.stdout) };
    } catch {
      return { ok: false, reason: `unexpected output: ${child.stdout}` };
    }
  }
  const why = child.signal ? `the check process died with ${child.signal}` : (child.stderr || '').trim();
  const lines = why.split('\n').filter((line) => line.trim() && !/^\s+at /.test(line) && !/^Node\.js v/.test(line));
  return { ok: false, reason: lines.slice(0, 12).join('\n  ') || `exit code ${child.status}` };
}

function main() {
  // Prebuilds serve installs (npm install / ci / rebuild run the "install" script); `npm run compile` and a direct
  // `node scripts/install.js` always compile, so a developer's build is never replaced by a stale prebuild.
  const asInstallHook = process.env.npm_lifecycle_event === 'install';
  const fromSource =
    !asInstallHook ||
    process.env.BOOTSTRAPPED_CE_BUILD_FROM_SOURCE === '1' ||
    process.env.npm_config_build_from_source === 'true';
  const notes = [];
  if (!fromSource && prebuildFolder()) {
    const check = checkPrebuild();
    if (check.ok) {
      process.stdout.write(
        `bootstrapped-ce: using the prebuild ${path.relative(root, check.file)} (LibTorch ${check.version}); nothing to compile\n`,
      );
      return;
    }
    process.stdout.write(
      `bootstrapped-ce: the prebuild cannot be used here, building from source:\n  ${check.reason}\n`,
    );
    notes.push(`The bundled prebuild was not usable: ${check.reason}`);
  }
  buildFromSource({ notes });
}

module.exports = { buildFromSource };

if (require.main === module) main();
