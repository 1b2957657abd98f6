import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

// The compiled package (dist/, built by `npm ci` through the prepare script) loads from require and import.
const root = path.join(__dirname, '..');
const built = fs.existsSync(path.join(root, 'dist', 'index.mjs'));

(built ? describe : describe.skip)('package entry points', () => {
  if (!built) console.warn('skipped: dist/ is not built; run `npm run build:ts`');

  const run = (args: string[]) => execFileSync(process.execPath, args, { cwd: root, encoding: 'utf8' }).trim();

  test('require() gives the CommonJS build', () => {
    expect(run(['-e', "const b = require('bootstrapped-ce'); console.log(b.tensor([1, 2]).sum().item())"])).toBe('3');
  });

  test('import gives the same functions as named exports', () => {
    const out = run([
      '--input-type=module',
      '-e',
      "import { tensor, crossEntropy } from 'bootstrapped-ce'; import cjs from 'bootstrapped-ce'; " +
        'console.log(tensor([2, 3]).sum().item(), typeof crossEntropy, cjs.tensor === tensor)',
    ]);
    expect(out).toBe('5 function true');
  });

  test('typings are shipped', () => {
    expect(fs.existsSync(path.join(root, 'dist', 'index.d.ts'))).toBe(true);
  });
});
