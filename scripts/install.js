#!/usr/bin/env node
// Builds the native addon with cmake-js (run by `npm install` / `npm ci`, and by binding.gyp for node-gyp).
// The build happens in build/cmake-js and the result is copied to build/Release, so that node-gyp (which owns
// build/Makefile) and cmake-js never write over each other. A missing LibTorch or CMake gives one clear
// message instead of a CMake trace.
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.join(__dirname, '..');
const outDir = path.join(root, 'build', 'cmake-js');
const releaseDir = path.join(root, 'build', 'Release');

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

function build() {
  const which = spawnSync(process.platform === 'win32' ? 'where' : 'which', ['cmake'], { encoding: 'utf8' });
  if (which.status !== 0) {
    fail([
      'CMake was not found, and it is needed to build the native addon.',
      'Debian/Ubuntu: `sudo apt-get install cmake g++ libtorch-dev` (or run `bash scripts/setup` in a clone).',
      'Elsewhere: install CMake >= 3.19 and a C++17 compiler.',
    ]);
  }
  // An explicit LibTorch choice always configures afresh, so that a cached choice from an earlier build
  // cannot win over it.
  const explicit = process.env.LIBTORCH || process.env.Torch_DIR;
  const args = [cmakeJsBin(), explicit ? 'rebuild' : 'compile', '--out', outDir, '--directory', root];
  const jobs = process.env.BCE_BUILD_JOBS;
  if (jobs) args.push('--parallel', jobs);
  const result = spawnSync(process.execPath, args, { cwd: root, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  const output = `${result.stdout || ''}${result.stderr || ''}`;
  const notFound = output.match(/BCE_LIBTORCH_NOT_FOUND: ([\s\S]*?)(\n\s*\n|Call Stack|-- Configuring incomplete)/);
  if (notFound) fail([`cannot build: ${notFound[1].replace(/\s*\n\s*/g, ' ').trim()}`]);
  if (result.status !== 0) {
    process.stderr.write(output);
    fail(['the native build failed (output above).']);
  }
  const used = output.match(/bootstrapped-ce: LibTorch [^\n]*/);
  if (used) process.stdout.write(`${used[0]}\n`);
  fs.mkdirSync(releaseDir, { recursive: true });
  for (const file of ['bootstrapped_ce.node', 'libtorch.json']) {
    fs.copyFileSync(path.join(outDir, 'Release', file), path.join(releaseDir, file));
  }
  process.stdout.write(`bootstrapped-ce: built ${path.relative(root, path.join(releaseDir, 'bootstrapped_ce.node'))}\n`);
}

build();
