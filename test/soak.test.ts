/**
 * Short form of `npm run soak` (scripts/soak.ts), in a child process so that RSS is the loop's own: a few
 * thousand create -> loss -> backward steps at 1x19x64x64, with dispose() and with the garbage collector only.
 * Same assertions as the full run: RSS grows < 5% after warm-up (dispose) or stays bounded (gc), and
 * memory().tensors returns to its starting value.
 */
import { spawnSync } from 'child_process';
import * as path from 'path';

const root = path.join(__dirname, '..');

function soak(extra: string[]): {
  result: Record<string, unknown> & { pass: boolean; failures: string[] };
  output: string;
} {
  const child = spawnSync(
    process.execPath,
    [
      require.resolve('ts-node/dist/bin.js'),
      '--transpile-only',
      'scripts/soak.ts',
      '--iterations',
      '3000',
      '--warmup',
      '1000',
      '--report-every',
      '1000',
      '--json',
      ...extra,
    ],
    { cwd: root, encoding: 'utf8', timeout: 55000 },
  );
  const output = `${child.stdout}\n${child.stderr}`;
  const last = child.stdout.trim().split('\n').pop() ?? '';
  let result;
  try {
    result = JSON.parse(last);
  } catch {
    throw new Error(`soak printed no result (status ${child.status}, signal ${child.signal}):\n${output}`);
  }
  console.log(
    output
      .split('\n')
      .filter((l) => /^(PASS|FAIL|iter)/.test(l))
      .join('\n'),
  );
  return { result, output };
}

describe('soak (short form)', () => {
  it('dispose(): RSS grows < 5% after warm-up and memory().tensors returns to its start', () => {
    const { result } = soak([]);
    expect(result.failures).toEqual([]);
    expect(result.pass).toBe(true);
    expect(result.growthPercent).toBeLessThan(5);
    expect(result.tensorsEnd).toBe(result.tensorsStart);
    expect(result.tensorsMax).toBe(result.tensorsStart);
  }, 60000);

  it('a synchronous loop scoped by trainStep(): RSS grows < 5% after warm-up, no tensor left', () => {
    const { result } = soak(['--train-step', '--yield-every', '1000000']);
    expect(result.mode).toBe('trainStep');
    expect(result.failures).toEqual([]);
    expect(result.growthPercent).toBeLessThan(5);
    expect(result.tensorsEnd).toBe(result.tensorsStart);
    expect(result.tensorsMax).toBe(result.tensorsStart);
  }, 60000);

  it('garbage collector only: RSS stays bounded and every tensor is eventually freed', () => {
    const { result } = soak(['--gc']);
    expect(result.failures).toEqual([]);
    expect(result.pass).toBe(true);
    expect(result.maxGrowthPercent).toBeLessThan(50);
    // An awaiting loop ends within 10 % of its post-warm-up RSS.
    expect(result.growthPercent).toBeLessThan(10);
    expect(result.tensorsEnd).toBe(result.tensorsStart);
    // Collection keeps pace: a few hundred handles at most are waiting for the collector at any time.
    expect(result.tensorsMax as number).toBeLessThan(2000);
  }, 60000);
});
