/**
 * Fuzz of the operator entry point: a child process (scripts/fuzz-child.ts --only callOperator) calls
 * `callOperator` with seeded random schemas and argument lists: listed schemas and others, tensors of every
 * dtype and shape, extreme numbers, dtype names, lists, garbage. A crash (signal, abort, non-zero exit) fails
 * this test instead of killing jest. FUZZ_SEED and FUZZ_CALLS override the seed and the number of calls.
 */
import { spawnSync } from 'child_process';
import * as path from 'path';

const root = path.join(__dirname, '..');

describe('operator fuzz', () => {
  it('survives random argument lists to callOperator', () => {
    const seed = Number(process.env.FUZZ_SEED ?? 20251203);
    const calls = Number(process.env.FUZZ_CALLS ?? 6000);
    const child = spawnSync(
      process.execPath,
      [
        require.resolve('ts-node/dist/bin.js'),
        '--transpile-only',
        'scripts/fuzz-child.ts',
        '--only',
        'callOperator',
        '--seed',
        String(seed),
        '--calls',
        String(calls),
      ],
      { cwd: root, encoding: 'utf8', timeout: 110000, maxBuffer: 64 * 2 ** 20 },
    );
    const line = child.stdout.split('\n').find((l) => l.startsWith('FUZZ '));
    const report = line ? JSON.parse(line.slice(5)) : null;
    const operators: Record<string, { returned: number; threw: number }> = report?.operators ?? {};
    const reached = Object.entries(operators).filter(([, v]) => v.returned > 0);
    console.log(
      `operator fuzz seed ${seed}: ${report?.calls ?? '?'} calls (${report?.returned ?? '?'} returned, ` +
        `${JSON.stringify(report?.errorNames ?? {})}), ${reached.length} schemas ran to a result` +
        (child.status !== 0 || child.signal !== null
          ? `\nstatus ${child.status} signal ${child.signal}\n${child.stdout.slice(-4000)}\n${child.stderr.slice(-4000)}`
          : ''),
    );
    expect({ status: child.status, signal: child.signal }).toEqual({ status: 0, signal: null });
    expect(report.calls).toBeGreaterThanOrEqual(calls);
    expect(report.perEntryPoint.callOperator).toBeGreaterThanOrEqual(calls - 20);
    expect(report.nonErrorThrows).toBe(0);
    expect(Object.keys(report.errorNames).every((name) => ['Error', 'RangeError', 'TypeError'].includes(name))).toBe(
      true,
    );
    // The calls reach the kernels, not only the argument checks: most schemas ran to a result at least once.
    expect(reached.length).toBeGreaterThanOrEqual(40);
    // A schema that is not listed never runs.
    for (const name of ['aten::_local_scalar_dense', 'aten::empty.memory_format', '', 'aten::argmax.nope', 'argmax']) {
      expect(operators[name]?.returned ?? 0).toBe(0);
    }
  }, 120000);
});
