/**
 * The benchmark's command line (`npm run bench -- --help`): the workloads to run and how, with the defaults of a
 * full run and of `--quick`.
 */
import * as os from 'os';
import * as path from 'path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { fraction, list, nonNegativeInteger, positiveInteger, shape } from '../cli-numbers';
import { Mode } from './addon';

export const REPO_ROOT = path.resolve(__dirname, '..', '..');
const DEFAULT_SIZES = ['1x19x32x32', '1x19x128x128', '2x19x256x512', '8x19x512x1024'];
const QUICK_SIZES = ['1x19x32x32', '1x19x128x128', '2x19x256x512'];
const SEED = 0;

/** What a run measures, parsed and checked. */
export interface BenchOptions {
  /** `--quick`: a small subset that runs in under a minute. */
  quick: boolean;
  /** Logit shapes NxCxHxW (or NxCxD...). */
  sizes: number[][];
  threadList: number[];
  pList: number[];
  modes: Mode[];
  /** Timed repetitions per implementation and workload; undefined: by size (`defaultReps`). */
  repsOverride?: number;
  /** Interleaved rounds the repetitions are split into; undefined: 20, or one per repetition below 20. */
  roundsOverride?: number;
  device: string;
  /** The PRNG seed of the data (the same in both processes). */
  seed: number;
  outDir: string;
  /** Which sizes get the peak-memory probes. */
  memWhich: 'all' | 'largest' | 'none';
  /** Whether both processes go on the same t CPUs for t threads (Linux). */
  pin: boolean;
}

function mode(value: string): Mode {
  if (value !== 'fwd' && value !== 'fwdbwd')
    throw new InvalidArgumentError(`--passes expects fwd or fwdbwd, got '${value}'`);
  return value;
}

function memChoice(value: string): BenchOptions['memWhich'] {
  if (value !== 'all' && value !== 'largest' && value !== 'none')
    throw new InvalidArgumentError(`--mem expects all, largest or none, got '${value}'`);
  return value;
}

function device(value: string): string {
  if (value !== 'cpu' && !/^cuda(:\d+)?$/.test(value))
    throw new InvalidArgumentError(`--device expects cpu, cuda or cuda:N, got '${value}'`);
  return value;
}

/** Parses `argv` (process.argv); commander prints the help or the error and exits on `--help` or a bad value. */
export function parseBenchOptions(argv: string[]): BenchOptions {
  const program = new Command()
    .name('npm run bench --')
    .description(
      "Bootstrapped cross-entropy: the addon against eager PyTorch (the widely used PyTorch implementation, STCN's " +
        'BootstrappedCE), interleaved, in one run.',
    )
    .option(
      '--sizes <list>',
      `logit shapes NxCxHxW, comma-separated (default ${DEFAULT_SIZES.join(',')})`,
      list(shape('--sizes', { min: 3, max: Infinity })),
    )
    .option(
      '--threads <list>',
      'intra-op thread counts (default 1,2; quick: 2, or 1 on a 1-core machine)',
      list(positiveInteger('--threads')),
    )
    .option('--p <list>', 'kept fractions (default 0.15,0.25; quick: 0.25)', list(fraction('--p')))
    .addOption(
      new Option('--passes <list>', 'fwd (forward alone) and/or fwdbwd (forward + backward)')
        .default(['fwd', 'fwdbwd'], 'fwd,fwdbwd')
        .argParser(list(mode)),
    )
    .option(
      '--reps <n>',
      'timed repetitions per implementation and workload (default: by size, 5 to 200)',
      positiveInteger('--reps'),
    )
    .option(
      '--rounds <n>',
      'interleaved rounds the repetitions are split into (default: 20, or one per repetition below 20)',
      positiveInteger('--rounds'),
    )
    .option('--quick', 'a small subset that runs in under a minute')
    .option(
      '--mem <which>',
      'peak memory (a fresh process per workload and implementation): all, largest (size only) or none (default all; quick: largest)',
      memChoice,
    )
    .option('--device <device>', 'cpu or cuda', device, 'cpu')
    .option('--out <dir>', 'folder for bench.json and bench.md', 'bench-results')
    .option('--seed <n>', 'PRNG seed of the data (the same in both processes)', nonNegativeInteger('--seed'), SEED)
    .option(
      '--no-pin',
      'leave both processes to the scheduler (default: both on the same t CPUs for t threads; Linux)',
    );

  program.parse(argv);
  const raw = program.opts<{
    sizes?: number[][];
    threads?: number[];
    p?: number[];
    passes: Mode[];
    reps?: number;
    rounds?: number;
    quick?: boolean;
    mem?: BenchOptions['memWhich'];
    device: string;
    out: string;
    seed: number;
    pin: boolean;
  }>();
  const quick = !!raw.quick;
  const parseSizes = list(shape('--sizes', { min: 3, max: Infinity }));
  return {
    quick,
    sizes: raw.sizes ?? parseSizes((quick ? QUICK_SIZES : DEFAULT_SIZES).join(',')),
    threadList: raw.threads ?? (quick ? [Math.min(2, os.cpus().length)] : [1, 2]),
    pList: raw.p ?? (quick ? [0.25] : [0.15, 0.25]),
    modes: raw.passes,
    repsOverride: raw.reps,
    roundsOverride: raw.rounds,
    device: raw.device,
    seed: raw.seed,
    outDir: path.resolve(REPO_ROOT, raw.out),
    memWhich: raw.mem ?? (quick ? 'largest' : 'all'),
    pin: raw.pin,
  };
}

/**
 * Default repetitions by size: the small sizes take microseconds per call, so many calls in many short rounds keep
 * a pause of the virtual machine (or another process) from covering most of one implementation's calls; few for
 * the 319 MB case (up to 1 s per call).
 */
export function defaultReps(elements: number, quick: boolean): number {
  const base = elements >= 40e6 ? 6 : elements >= 2e6 ? 40 : elements >= 200e3 ? 400 : 2000;
  return quick ? Math.max(3, Math.ceil(base / 4)) : base;
}
