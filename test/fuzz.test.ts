/**
 * Fuzz: a child process (scripts/fuzz-child.ts) calls every native entry point and TensorHandle method with
 * seeded random arguments. A crash (signal, abort, non-zero exit) fails this test instead of killing jest.
 * FUZZ_SEED and FUZZ_CALLS override the fuzzer's PRNG seed and the number of calls.
 */
import { spawnSync } from 'child_process';
import * as path from 'path';

const root = path.join(__dirname, '..');

describe('fuzz', () => {
  it('survives at least 10,000 random calls to the native entry points', () => {
    const seed = Number(process.env.FUZZ_SEED ?? 20240611);
    const calls = Number(process.env.FUZZ_CALLS ?? 12000);
    const child = spawnSync(
      process.execPath,
      [
        require.resolve('ts-node/dist/bin.js'),
        '--transpile-only',
        'scripts/fuzz-child.ts',
        '--seed',
        String(seed),
        '--calls',
        String(calls),
      ],
      { cwd: root, encoding: 'utf8', timeout: 110000, maxBuffer: 64 * 2 ** 20 },
    );
    const line = child.stdout.split('\n').find((l) => l.startsWith('FUZZ '));
    const crashes = child.status === 0 && child.signal === null && line !== undefined ? 0 : 1;
    const report = line ? JSON.parse(line.slice(5)) : null;
    console.log(
      `fuzz seed ${seed}: ${report?.calls ?? '?'} calls (${report?.returned ?? '?'} returned, ${report?.threw ?? '?'} threw ` +
        `${JSON.stringify(report?.errorNames ?? {})}), crashes ${crashes}` +
        (crashes
          ? `\nstatus ${child.status} signal ${child.signal}\n${child.stdout.slice(-4000)}\n${child.stderr.slice(-4000)}`
          : ''),
    );
    expect({ status: child.status, signal: child.signal, crashes }).toEqual({ status: 0, signal: null, crashes: 0 });
    expect(report.calls).toBeGreaterThanOrEqual(10000);
    // Every throw was a proper Error of the three expected kinds.
    expect(report.nonErrorThrows).toBe(0);
    expect(Object.keys(report.errorNames).sort()).toEqual(expect.arrayContaining(['Error', 'RangeError', 'TypeError']));
    expect(Object.keys(report.errorNames).every((name) => ['Error', 'RangeError', 'TypeError'].includes(name))).toBe(
      true,
    );
    // The giant requests all failed cleanly.
    expect(report.giant.every((g: string) => !g.includes('returned'))).toBe(true);
    // Every known entry point was exercised.
    for (const name of [
      'fromData',
      'zeros',
      'ones',
      'randn',
      'randint',
      'bootstrappedCrossEntropy',
      'bootstrappedBinaryCrossEntropy',
      'crossEntropy',
      'TensorHandle.backward',
      'TensorHandle.to',
    ]) {
      expect(report.perEntryPoint[name]).toBeGreaterThan(0);
    }
  }, 120000);
});
