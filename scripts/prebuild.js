#!/usr/bin/env node
// `npm run prebuild`: makes one prebuild per LibTorch present (a "flavour": LibTorch major.minor, CPU or CUDA,
// C++ ABI), each prebuilds/<platform>-<arch>/bootstrapped_ce.torch<M.m>-<cpu|cuda>-<cxx11|precxx11>.napi.node, with
// prebuildify (Node-API, stripped), building through cmake-js (scripts/prebuild-node-gyp.js stands in for
// node-gyp). prebuilds/<platform>-<arch>/libtorch.json lists them: for each, the LibTorch it was built against
// (version, CPU or CUDA and which CUDA, C++11 ABI or not, folders) and the LibTorch libraries it needs at run time.
// lib/prebuild-check.ts checks those records against the LibTorch present before it loads a prebuild.
//
// Which LibTorches: LIBTORCH or Torch_DIR when set (that one only); else Debian's libtorch-dev and the PyPI
// torches that `BCE_TORCH=pypi bash scripts/setup` installed, each one present.
// Each builds incrementally in build-prebuild/<flavour folder>/; BCE_PREBUILD_CLEAN=1 starts afresh.
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const prebuildify = require('prebuildify');
const { pypiTorchDirs } = require('./pypi-torch.js');

const root = path.join(__dirname, '..');
const pkg = require(path.join(root, 'package.json'));
const NAME = 'bootstrapped_ce.napi';
const folder = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);

/** Shared libraries of LibTorch (and CUDA) the binary names as dependencies (DT_NEEDED / load commands). */
function neededLibraries(file) {
  let out = '';
  if (process.platform === 'linux') {
    out = spawnSync('readelf', ['-d', file], { encoding: 'utf8' }).stdout || '';
    return [...out.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]).filter(isTorchLib);
  }
  if (process.platform === 'darwin') {
    out = spawnSync('otool', ['-L', file], { encoding: 'utf8' }).stdout || '';
    return out
      .split('\n')
      .slice(1)
      .map((line) => path.basename(line.trim().split(' ')[0]))
      .filter(isTorchLib);
  }
  return [];
}

function isTorchLib(name) {
  return /^(lib)?(torch|c10|cuda|cudart|nvrtc)/.test(name);
}

/** The file name of a flavour's binary, e.g. bootstrapped_ce.torch2.15-cuda-cxx11.napi.node. */
function flavourBinaryName(record) {
  const mm = (/^(\d+\.\d+)/.exec(record.version) || [null, 'unknown'])[1];
  const abi = record.cxx11Abi === false ? '-precxx11' : record.cxx11Abi === true ? '-cxx11' : '';
  return `bootstrapped_ce.torch${mm}-${record.cuda ? 'cuda' : 'cpu'}${abi}.napi.node`;
}

/**
 * The LibTorch installations to build for, as environments for the build: LIBTORCH or Torch_DIR when set (that
 * one only); else each one present among the system's (Debian's libtorch-dev) and the PyPI virtual environments
 * that `BCE_TORCH=pypi bash scripts/setup` made.
 */
function libtorchesPresent() {
  if (process.env.LIBTORCH || process.env.Torch_DIR)
    return [{ label: process.env.LIBTORCH || process.env.Torch_DIR, env: {} }];
  const found = [];
  for (const dir of ['/usr/lib/x86_64-linux-gnu/cmake/Torch', '/usr/lib/aarch64-linux-gnu/cmake/Torch']) {
    if (fs.existsSync(path.join(dir, 'TorchConfig.cmake'))) found.push({ label: dir, env: { Torch_DIR: dir } });
  }
  for (const torchDir of pypiTorchDirs()) found.push({ label: torchDir, env: { LIBTORCH: torchDir } });
  if (found.length === 0) found.push({ label: 'the LibTorch a source build finds', env: {} });
  return found;
}

/** Builds one flavour with prebuildify; resolves to its record. */
function buildFlavour(libtorch) {
  // prebuildify takes the binary from <cwd>/build/Release: a scratch folder, so build/Release is never moved.
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'bce-prebuild-'));
  const nodeGyp = path.join(__dirname, 'prebuild-node-gyp.js');
  const saved = { LIBTORCH: process.env.LIBTORCH, Torch_DIR: process.env.Torch_DIR };
  Object.assign(process.env, libtorch.env);
  // Its own incremental build folder (scripts/prebuild-node-gyp.js), so flavours do not reconfigure each other.
  process.env.BCE_PREBUILD_OUT_DIR = path.join(
    root,
    'build-prebuild',
    libtorch.label.replace(/[^A-Za-z0-9.]+/g, '_').replace(/^_+/, ''),
  );
  const restore = () => {
    for (const [key, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
    fs.rmSync(scratch, { recursive: true, force: true });
  };
  return new Promise((resolve, reject) => {
    prebuildify(
      {
        cwd: scratch,
        out: scratch,
        name: NAME,
        napi: true,
        strip: process.env.BCE_PREBUILD_STRIP !== '0',
        nodeGyp: process.platform === 'win32' ? `"${process.execPath}" "${nodeGyp}"` : nodeGyp,
        targets: [process.versions.node],
      },
      (err) => {
        if (err) {
          restore();
          reject(new Error(`prebuildify failed for ${libtorch.label}: ${err.message || err}`));
          return;
        }
        const libtorchRecord = JSON.parse(
          fs.readFileSync(path.join(scratch, 'build', 'Release', 'libtorch.json'), 'utf8'),
        );
        const built = path.join(scratch, 'prebuilds', `${process.platform}-${process.arch}`, `${NAME}.node`);
        const binary = flavourBinaryName(libtorchRecord);
        fs.mkdirSync(folder, { recursive: true });
        fs.copyFileSync(built, path.join(folder, binary));
        const entry = {
          ...libtorchRecord,
          flavour: libtorchRecord.cuda
            ? `CUDA${typeof libtorchRecord.cuda === 'string' ? ` ${libtorchRecord.cuda}` : ''}`
            : 'CPU',
          needed: neededLibraries(path.join(folder, binary)),
          binary,
          napiVersion: pkg.binary.napi_versions[0],
          platform: process.platform,
          arch: process.arch,
          package: `${pkg.name}@${pkg.version}`,
          builtWith: `node ${process.versions.node}`,
        };
        restore();
        const size = (fs.statSync(path.join(folder, binary)).size / 1024).toFixed(0);
        process.stdout.write(
          `bootstrapped-ce: ${path.relative(root, path.join(folder, binary))} (${size} KiB, LibTorch ${entry.version} ` +
            `${entry.flavour}, C++11 ABI ${entry.cxx11Abi}; needs ${entry.needed.join(', ') || 'nothing recorded'})\n`,
        );
        resolve(entry);
      },
    );
  });
}

async function main() {
  if (process.env.BCE_PREBUILD_CLEAN === '1')
    fs.rmSync(path.join(root, 'build-prebuild'), { recursive: true, force: true });
  fs.rmSync(folder, { recursive: true, force: true });
  const prebuilds = [];
  for (const libtorch of libtorchesPresent()) prebuilds.push(await buildFlavour(libtorch));
  // One record for the folder: the loader tries the flavours in this order (lib/loader.ts).
  fs.writeFileSync(path.join(folder, 'libtorch.json'), `${JSON.stringify({ prebuilds }, null, 2)}\n`);
}

main().catch((error) => {
  process.stderr.write(`bootstrapped-ce: ${error.message}\n`);
  process.exit(1);
});
