#!/usr/bin/env node
// `npm run prebuild`: makes prebuilds/<platform>-<arch>/bootstrapped_ce.napi.node with prebuildify (Node-API,
// stripped), building through cmake-js (scripts/prebuild-node-gyp.js stands in for node-gyp), and writes
// prebuilds/<platform>-<arch>/libtorch.json beside it: the LibTorch the binary was built against (version, CPU
// or CUDA and which CUDA, folders) and the LibTorch libraries it needs at run time. lib/native.ts checks that
// record against the LibTorch present before it loads the prebuild.
//
// LibTorch is chosen as for any source build: LIBTORCH, Torch_DIR, python's torch, the system's.
// The build is incremental in build-prebuild/; BCE_PREBUILD_CLEAN=1 starts it afresh.
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const prebuildify = require('prebuildify');

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
    return out.split('\n').slice(1).map((line) => path.basename(line.trim().split(' ')[0])).filter(isTorchLib);
  }
  return [];
}

function isTorchLib(name) {
  return /^(lib)?(torch|c10|cuda|cudart|nvrtc)/.test(name);
}

function main() {
  if (process.env.BCE_PREBUILD_CLEAN === '1') fs.rmSync(path.join(root, 'build-prebuild'), { recursive: true, force: true });
  fs.rmSync(folder, { recursive: true, force: true });
  // prebuildify takes the binary from <cwd>/build/Release: a scratch folder, so build/Release is never moved.
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'bce-prebuild-'));
  const nodeGyp = path.join(__dirname, 'prebuild-node-gyp.js');
  prebuildify(
    {
      cwd: scratch,
      out: root,
      name: NAME,
      napi: true,
      strip: process.env.BCE_PREBUILD_STRIP !== '0',
      nodeGyp: process.platform === 'win32' ? `"${process.execPath}" "${nodeGyp}"` : nodeGyp,
      targets: [process.versions.node],
    },
    (err) => {
      const record = path.join(scratch, 'build', 'Release', 'libtorch.json');
      if (err) {
        fs.rmSync(scratch, { recursive: true, force: true });
        process.stderr.write(`bootstrapped-ce: prebuildify failed: ${err.message || err}\n`);
        process.exit(1);
      }
      const binary = path.join(folder, `${NAME}.node`);
      const libtorch = JSON.parse(fs.readFileSync(record, 'utf8'));
      const entry = {
        ...libtorch,
        flavour: libtorch.cuda ? `CUDA${typeof libtorch.cuda === 'string' ? ` ${libtorch.cuda}` : ''}` : 'CPU',
        needed: neededLibraries(binary),
        binary: path.basename(binary),
        napiVersion: pkg.binary.napi_versions[0],
        platform: process.platform,
        arch: process.arch,
        package: `${pkg.name}@${pkg.version}`,
        builtWith: `node ${process.versions.node}`,
      };
      fs.writeFileSync(path.join(folder, 'libtorch.json'), `${JSON.stringify(entry, null, 2)}\n`);
      fs.rmSync(scratch, { recursive: true, force: true });
      const size = (fs.statSync(binary).size / 1024).toFixed(0);
      process.stdout.write(
        `bootstrapped-ce: ${path.relative(root, binary)} (${size} KiB, LibTorch ${entry.version} ${entry.flavour}; ` +
          `needs ${entry.needed.join(', ') || 'nothing recorded'})\n`,
      );
    },
  );
}

main();
