#!/usr/bin/env node
// Stands in for node-gyp when prebuildify runs (`prebuildify --node-gyp scripts/prebuild-node-gyp.js`): this
// package builds with cmake-js, not gyp. prebuildify calls `<node-gyp> rebuild --target=... --arch=...
// --release` in its working directory and then takes build/Release/*.node from there; this script builds with
// cmake-js in build-prebuild/ or BCE_PREBUILD_OUT_DIR (its own folder, so a local build in build/ is never touched) and copies the
// binary and its libtorch.json into <cwd>/build/Release. LibTorch is chosen as for any source build (LIBTORCH,
// Torch_DIR, python's torch, the system's: cmake/FindLibTorch.cmake).
'use strict';
const path = require('path');
const { buildFromSource } = require('./install.js');

const args = process.argv.slice(2);
if (args.includes('--debug')) {
  process.stderr.write('bootstrapped-ce: prebuilds are Release builds only\n');
  process.exit(1);
}
const arch = (args.find((a) => a.startsWith('--arch=')) || '').slice('--arch='.length);
if (arch && arch !== process.arch) {
  process.stderr.write(`bootstrapped-ce: cross-compiling (--arch=${arch} on ${process.arch}) is not supported\n`);
  process.exit(1);
}
buildFromSource({
  outDir: process.env.BCE_PREBUILD_OUT_DIR || path.join(__dirname, '..', 'build-prebuild'),
  releaseDir: path.join(process.cwd(), 'build', 'Release'),
});
