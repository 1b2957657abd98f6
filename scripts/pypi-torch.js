#!/usr/bin/env node
// Where `BCE_TORCH=pypi[==VERSION] bash scripts/setup` keeps PyTorch from PyPI: one Python virtual environment
// per requested version, outside the sources, reused when present. One place for the rule, used by
// scripts/setup and scripts/prebuild.js.
//
//   node scripts/pypi-torch.js venv [VERSION]   prints the environment's folder
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');

/** The folder holding the virtual environments: $BCE_CACHE_DIR, else $XDG_CACHE_HOME/bootstrapped-ce, else ~/.cache/bootstrapped-ce. */
function cacheDir() {
  if (process.env.BCE_CACHE_DIR) return path.resolve(process.env.BCE_CACHE_DIR);
  return path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'bootstrapped-ce');
}

/** The virtual environment for a version ('' for the newest): $BCE_TORCH_VENV when set. */
function venvDir(version = '') {
  if (process.env.BCE_TORCH_VENV) return path.resolve(process.env.BCE_TORCH_VENV);
  return path.join(cacheDir(), `torch-pypi-${version || 'latest'}`);
}

/** The `torch` package folders (with LibTorch's CMake files) of every such environment present. */
function pypiTorchDirs() {
  const venvs = new Set();
  if (process.env.BCE_TORCH_VENV) venvs.add(venvDir());
  try {
    for (const name of fs.readdirSync(cacheDir()).sort())
      if (name.startsWith('torch-pypi-')) venvs.add(path.join(cacheDir(), name));
  } catch {
    // no cache folder yet
  }
  const dirs = [];
  for (const venv of venvs) {
    let libs = [];
    try {
      libs = fs.readdirSync(path.join(venv, 'lib')).filter((name) => /^python3/.test(name));
    } catch {
      continue;
    }
    for (const lib of libs) {
      const torch = path.join(venv, 'lib', lib, 'site-packages', 'torch');
      if (fs.existsSync(path.join(torch, 'share', 'cmake', 'Torch', 'TorchConfig.cmake'))) dirs.push(torch);
    }
  }
  return dirs;
}

module.exports = { cacheDir, venvDir, pypiTorchDirs };

if (require.main === module) {
  const [command, version] = process.argv.slice(2);
  if (command !== 'venv') {
    process.stderr.write('usage: node scripts/pypi-torch.js venv [VERSION]\n');
    process.exit(2);
  }
  process.stdout.write(`${venvDir(version)}\n`);
}
