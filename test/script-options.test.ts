/**
 * The scripts' numeric options go through one parser (scripts/cli-numbers.ts): a bad value ends the script with a
 * non-zero status and a message naming the option, what it expects and what it got, before any work starts.
 * Each script runs once as a child process (tests import nothing from scripts/; a script stops at its first bad
 * option), with a value the option must refuse: one kind of number per script.
 */
import { spawnSync } from 'child_process';
import * as path from 'path';

const root = path.join(__dirname, '..');

function runScript(script: string, args: string[]): { status: number | null; output: string } {
  const child = spawnSync(
    process.execPath,
    ['-r', require.resolve('ts-node/register/transpile-only'), script, ...args],
    { cwd: root, encoding: 'utf8', timeout: 60_000 },
  );
  return { status: child.status, output: `${child.stdout}\n${child.stderr}` };
}

const cases: [script: string, args: string[], message: string][] = [
  ['scripts/soak.ts', ['--max-growth', '-1'], "--max-growth expects a positive number, got '-1'"],
  ['scripts/demo/main.ts', ['--p', '1.5'], "--p expects a number in (0, 1], got '1.5'"],
  ['scripts/parity/run.ts', ['--cases', 'abc'], "--cases expects a positive integer, got 'abc'"],
  [
    'scripts/bench/main.ts',
    ['--sizes', '1x19'],
    "--sizes expects a shape of 3 or more positive sizes joined by 'x' (e.g. 8x19x512x1024), got '1x19'",
  ],
  ['scripts/bench/clustered.ts', ['--reps', '2.5'], "--reps expects a positive integer, got '2.5'"],
  ['scripts/fuzz-child.ts', ['--seed', '0x10'], "--seed expects a non-negative integer, got '0x10'"],
];

describe('a bad numeric option is refused, naming the option', () => {
  test.each(cases)('%s %p', (script, args, message) => {
    const { status, output } = runScript(script, args);
    expect(status).not.toBe(0);
    expect(status).not.toBeNull();
    expect(output).toContain(message);
  });
});

test('a good value passes the same parser: the benchmark prints its help with valid options', () => {
  const { status, output } = runScript('scripts/bench/main.ts', [
    '--threads',
    '1,2',
    '--p',
    '0.25',
    '--seed',
    '7',
    '--help',
  ]);
  expect(status).toBe(0);
  expect(output).toContain('--sizes <list>');
});
