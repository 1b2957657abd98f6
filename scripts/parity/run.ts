/**
 * `npm run parity`: the parity grid outside jest, on the CPU or a user's GPU.
 *   npm run parity -- --device cuda --cases 500 --seed 7 --python /path/to/python
 * Prints the number of cases and the worst relative error of loss and gradient per dtype, device and impl, then
 * the same for the tensor operator cases (test/parity/operators.ts, on the CPU);
 * exits 1 when a case fails, 2 when it cannot run (no PyTorch, no CUDA).
 */
import { Command, Option } from 'commander';
import { nonNegativeInteger, positiveInteger } from '../cli-numbers';
import { cuda } from '../../lib';
import { buildGrid } from '../../test/parity/grid';
import {
  CaseReport,
  DEFAULT_CASES,
  DEFAULT_SEED,
  compareCase,
  formatSummary,
  fusedStatus,
  runReference,
  skipReason,
  summarize,
} from '../../test/parity/harness';
import { findTorchPython } from '../../test/helpers/torch-python';
import { OPERATOR_CASES, OperatorReport, checkOperatorCase, runOperatorReference } from '../../test/parity/operators';

interface CliOptions {
  device: string;
  cases: number;
  seed: number;
  python?: string;
  verbose: boolean;
}

function parseArgs(argv: string[]): CliOptions {
  return new Command('parity')
    .description('Compare bootstrapped-ce with PyTorch over a seeded grid of loss configurations.')
    .addOption(new Option('--device <device>', 'device for both sides: cpu, cuda or cuda:N').default('cpu'))
    .option(
      '--cases <n>',
      'number of grid configurations (impl fused copies come on top)',
      positiveInteger('--cases'),
      DEFAULT_CASES,
    )
    .option('--seed <s>', 'grid seed', nonNegativeInteger('--seed'), DEFAULT_SEED)
    .option('--python <path>', 'Python with PyTorch (default: $PYTHON, /usr/bin/python3, python3)')
    .option('--verbose', 'list every case', false)
    .parse(argv)
    .opts<CliOptions>();
}

function main(): number {
  const options = parseArgs(process.argv);
  if (!/^(cpu|cuda(:\d+)?)$/.test(options.device)) {
    console.error(`parity: --device must be cpu, cuda or cuda:N, got '${options.device}'`);
    return 2;
  }
  if (options.device.startsWith('cuda') && !cuda.isAvailable()) {
    console.error('parity: --device cuda, but this build of the addon sees no CUDA device');
    return 2;
  }
  const python = findTorchPython(options.python ?? process.env.PYTHON);
  if (python.path === null) {
    console.error(`parity: ${python.reason}`);
    return 2;
  }
  const started = Date.now();
  const grid = buildGrid({ seed: options.seed, cases: options.cases });
  const fused = fusedStatus();
  const runnable = grid.filter((c) => skipReason(c.spec, options.device, fused) === null);
  const skipped = grid.filter((c) => skipReason(c.spec, options.device, fused) !== null);
  const reference = runReference(python.path, runnable, options.device);
  const reports: CaseReport[] = runnable.map((c) => compareCase(c, options.device, reference.results.get(c.spec.id)));
  const failed = reports.filter((r) => r.failures.length > 0);

  console.log(
    `parity: ${reports.length} cases on ${options.device} (seed ${options.seed}), PyTorch ${reference.torch} at ${python.path}`,
  );
  if (skipped.length > 0) {
    console.log(
      `parity: ${skipped.length} impl 'fused' case(s) skipped: ${skipReason(skipped[0].spec, options.device, fused)}`,
    );
  }
  console.log(formatSummary(summarize(reports)));
  for (const r of options.verbose ? reports : failed) {
    console.log(
      `${r.failures.length ? 'FAIL' : 'ok  '} ${r.name}${r.failures.length ? `\n       ${r.failures.join('\n       ')}` : ''}`,
    );
  }
  console.log(`parity: ${failed.length} of ${reports.length} failed (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  const operatorsFailed = runOperators(python.path, options.verbose);
  return failed.length > 0 || operatorsFailed > 0 ? 1 : 0;
}

/** The tensor operator cases (CPU inputs, as in test/operators-parity.test.ts); returns the number that failed. */
function runOperators(python: string, verbose: boolean): number {
  const started = Date.now();
  const reference = runOperatorReference(python);
  const reports: OperatorReport[] = Object.keys(OPERATOR_CASES).map((name) => checkOperatorCase(name, reference[name]));
  const failed = reports.filter((r) => r.failures.length > 0);
  const worst = (list: OperatorReport[]): string => {
    if (list.length === 0) return 'none';
    const top = list.reduce((a, b) => (b.worstError > a.worstError ? b : a));
    return top.worstError === 0 ? '0 (every value bit-identical)' : `${top.worstError.toExponential(2)} (${top.name})`;
  };
  const withGrads = reports.filter((r) => r.withGrads);
  console.log(`operators: ${reports.length} cases on cpu, ${withGrads.length} with gradients`);
  console.log(`operators: worst error |ours - PyTorch| / (1 + |PyTorch|): ${worst(reports)}`);
  console.log(`operators: worst error among cases with gradients: ${worst(withGrads)}`);
  for (const r of verbose ? reports : failed) {
    console.log(
      `${r.failures.length ? 'FAIL' : 'ok  '} ${r.name}${r.failures.length ? `\n       ${r.failures.join('\n       ')}` : ''}`,
    );
  }
  console.log(
    `operators: ${failed.length} of ${reports.length} failed (${((Date.now() - started) / 1000).toFixed(1)} s)`,
  );
  return failed.length;
}

process.exitCode = main();
