#!/usr/bin/env node
// Checks that every C++ source under cpp/ is formatted as .clang-format says (`npm run lint`); with --fix,
// formats them in place. Needs clang-format on PATH (Debian: apt-get install clang-format; 14 is the reference).
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const fix = process.argv.includes('--fix');

function sources(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const file = path.join(dir, entry.name);
    if (entry.isDirectory()) return sources(file);
    return /\.(cc|h)$/.test(entry.name) ? [file] : [];
  });
}

const files = sources(path.join(root, 'cpp'));
const args = fix ? ['-i', ...files] : ['--dry-run', '--Werror', ...files];
const result = spawnSync(process.env.CLANG_FORMAT || 'clang-format', args, { stdio: 'inherit' });
if (result.error) {
  console.error(
    `lint-cpp: could not run clang-format (${result.error.message}). Install it (Debian/Ubuntu: ` +
      'apt-get install clang-format) or name it with CLANG_FORMAT=/path/to/clang-format.',
  );
  process.exit(2);
}
if (result.status !== 0) {
  console.error('lint-cpp: the files above are not formatted; `node scripts/lint-cpp.js --fix` formats them.');
  process.exit(result.status ?? 1);
}
console.log(`lint-cpp: ${files.length} C++ files formatted as .clang-format says`);
