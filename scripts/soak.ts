/**
 * Soak test: N training steps (create -> loss -> backward -> dispose) at 1x19x64x64, printing RSS and
 * memory() every --report-every iterations and checking that nothing leaks.
 *
 *   npm run soak                          # 100,000 iterations, explicit dispose()
 *   npm run soak -- --gc                  # never dispose(): an awaiting loop, the garbage collector frees the tensors
 *   npm run soak -- --train-step --yield-every 1000000   # a synchronous loop scoped by trainStep()
 *   npm run soak -- --iterations 5000 --json
 *
 * Pass criteria
 *   dispose and --train-step modes: RSS grows by less than --max-growth (default 5%) between the end of the
 *                 warm-up and the end of the run, and memory().tensors is back at its starting value.
 *   --gc mode:    RSS stays bounded: the maximum RSS after the warm-up is less than --max-gc-growth (default 50%)
 *                 above the RSS at the end of the warm-up; after a final full collection memory().tensors is back
 *                 at its starting value.
 *   Node runs the finalizers of collected native handles on the event loop: a loop that never yields (and never
 *   disposes) frees nothing until it does. --yield-every (default 1) sets how often the loop awaits a macrotask.
 * Exit code 0 on PASS, 1 on FAIL. With --json the last line of stdout is the result as JSON.
 */
import * as v8 from 'v8';
import * as vm from 'vm';
import { Command } from 'commander';
import { positiveInteger, positiveNumber } from './cli-numbers';
import { bootstrappedCrossEntropy, memory, randint, randn, setNumThreads, trainStep } from '../lib';

const program = new Command()
  .name('soak')
  .description('Leak check: create -> loss -> backward -> dispose, N times at 1x19x64x64')
  .option('-n, --iterations <n>', 'iterations', positiveInteger('--iterations'), 100000)
  .option('--gc', 'never call dispose(); rely on the garbage collector', false)
  .option(
    '--train-step',
    'never call dispose(); scope each step with trainStep() instead (use with a large --yield-every for a synchronous loop)',
    false,
  )
  .option('--report-every <n>', 'print RSS and memory() every n iterations', positiveInteger('--report-every'), 10000)
  .option(
    '--warmup <n>',
    'iterations before the RSS baseline is taken (default: 10% of the run, at most 10000)',
    positiveInteger('--warmup'),
  )
  .option(
    '--max-growth <fraction>',
    'dispose mode: allowed RSS growth after warm-up',
    positiveNumber('--max-growth'),
    0.05,
  )
  .option(
    '--max-gc-growth <fraction>',
    '--gc mode: allowed max RSS above the post-warm-up RSS',
    positiveNumber('--max-gc-growth'),
    0.5,
  )
  .option(
    '--yield-every <n>',
    'await a macrotask every n iterations, as a loop awaiting its data does (native finalizers run there)',
    positiveInteger('--yield-every'),
    1,
  )
  .option('--threads <n>', 'LibTorch intra-op threads', positiveInteger('--threads'))
  .option('--json', 'print the result as JSON on the last line', false);

interface Options {
  iterations: number;
  gc: boolean;
  trainStep: boolean;
  reportEvery: number;
  warmup?: number;
  maxGrowth: number;
  maxGcGrowth: number;
  yieldEvery: number;
  threads?: number;
  json: boolean;
}

/** A full-collection function even without --expose-gc. */
function getGc(): () => void {
  const existing = (globalThis as { gc?: () => void }).gc;
  if (typeof existing === 'function') return existing;
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
}

const mb = (bytes: number): number => Math.round((bytes / 2 ** 20) * 10) / 10;
const rss = (): number => process.memoryUsage().rss;
const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Full collections, letting the second-pass (native) finalizers run in between. */
async function collect(gc: () => void): Promise<void> {
  for (let i = 0; i < 4; i++) {
    gc();
    await tick();
  }
}

function step(i: number, dispose: boolean): number {
  const input = randn([1, 19, 64, 64], { requiresGrad: true });
  const target = randint(0, 19, [1, 64, 64]);
  const loss = bootstrappedCrossEntropy(input, target, i, 0.15);
  loss.backward();
  const grad = input.grad;
  const value = loss.item();
  if (dispose) {
    grad?.dispose();
    loss.dispose();
    target.dispose();
    input.dispose();
  }
  return value;
}

export interface SoakResult {
  mode: 'dispose' | 'trainStep' | 'gc';
  iterations: number;
  warmup: number;
  seconds: number;
  rssStartMB: number;
  rssAfterWarmupMB: number;
  rssEndMB: number;
  rssMaxMB: number;
  growthPercent: number;
  maxGrowthPercent: number;
  tensorsStart: number;
  tensorsEnd: number;
  tensorsMax: number;
  pass: boolean;
  failures: string[];
}

async function main(): Promise<void> {
  const opts = program.parse(process.argv).opts<Options>();
  if (opts.threads !== undefined) setNumThreads(opts.threads);
  const gc = getGc();
  const mode: SoakResult['mode'] = opts.gc ? 'gc' : opts.trainStep ? 'trainStep' : 'dispose';
  // Modes that must free everything by the end of each step: their RSS must stay flat after warm-up.
  const dispose = mode !== 'gc';
  const warmup = Math.min(opts.warmup ?? Math.min(10000, Math.ceil(opts.iterations / 10)), opts.iterations);

  await collect(gc);
  const tensorsStart = memory().tensors;
  const rssStart = rss();
  let rssAfterWarmup = rssStart;
  let rssMax = 0;
  let tensorsMax = tensorsStart;
  const log = (i: number): void => {
    const m = memory();
    const heap = process.memoryUsage();
    console.log(
      `iter ${String(i).padStart(7)}  rss ${mb(rss()).toFixed(1).padStart(7)} MB  heap ${mb(heap.heapUsed).toFixed(1).padStart(6)} MB  ` +
        `external ${mb(heap.external).toFixed(1).padStart(7)} MB  memory() tensors ${String(m.tensors).padStart(5)} bytes ${m.bytes}`,
    );
  };
  console.log(`soak: ${opts.iterations} iterations, mode ${mode}, warm-up ${warmup}, 1x19x64x64`);
  log(0);
  const started = Date.now();
  for (let i = 1; i <= opts.iterations; i++) {
    if (mode === 'trainStep') trainStep(() => step(i, false));
    else step(i, mode === 'dispose');
    if (i === warmup) {
      if (dispose) await collect(gc); // settle the heap before taking the baseline
      rssAfterWarmup = rss();
    }
    if (i > warmup && i % 100 === 0) rssMax = Math.max(rssMax, rss());
    if (i % 100 === 0) tensorsMax = Math.max(tensorsMax, memory().tensors);
    if (i % opts.reportEvery === 0 || i === opts.iterations) log(i);
    // Give the event loop a turn, as a training loop awaiting its data does: Node-API runs the finalizers of
    // collected handles there, so without dispose() nothing is freed before the loop yields.
    if (i % opts.yieldEvery === 0) await tick();
  }
  const seconds = (Date.now() - started) / 1000;
  const rssEndRun = rss();
  rssMax = Math.max(rssMax, rssEndRun);
  await collect(gc);
  const rssEnd = rss();
  const tensorsEnd = memory().tensors;
  log(opts.iterations);

  const growth = (rssEnd - rssAfterWarmup) / rssAfterWarmup;
  const maxGrowth = (rssMax - rssAfterWarmup) / rssAfterWarmup;
  const failures: string[] = [];
  if (dispose && growth >= opts.maxGrowth) {
    failures.push(`RSS grew ${(growth * 100).toFixed(2)}% after warm-up (limit ${opts.maxGrowth * 100}%)`);
  }
  if (!dispose && maxGrowth >= opts.maxGcGrowth) {
    failures.push(
      `max RSS ${(maxGrowth * 100).toFixed(2)}% above the post-warm-up RSS (limit ${opts.maxGcGrowth * 100}%)`,
    );
  }
  if (tensorsEnd !== tensorsStart) failures.push(`memory().tensors ended at ${tensorsEnd}, started at ${tensorsStart}`);

  const result: SoakResult = {
    mode,
    iterations: opts.iterations,
    warmup,
    seconds,
    rssStartMB: mb(rssStart),
    rssAfterWarmupMB: mb(rssAfterWarmup),
    rssEndMB: mb(rssEnd),
    rssMaxMB: mb(rssMax),
    growthPercent: Math.round(growth * 10000) / 100,
    maxGrowthPercent: Math.round(maxGrowth * 10000) / 100,
    tensorsStart,
    tensorsEnd,
    tensorsMax,
    pass: failures.length === 0,
    failures,
  };
  console.log(
    `${result.pass ? 'PASS' : 'FAIL'}: mode ${result.mode}, ${opts.iterations} iterations in ${seconds.toFixed(1)} s; ` +
      `RSS start ${result.rssStartMB} MB, after warm-up ${result.rssAfterWarmupMB} MB, end ${result.rssEndMB} MB ` +
      `(growth ${result.growthPercent}%), max ${result.rssMaxMB} MB (${result.maxGrowthPercent}% above post-warm-up); ` +
      `memory().tensors start ${tensorsStart}, end ${tensorsEnd}, max seen ${tensorsMax}` +
      (failures.length > 0 ? `\n  ${failures.join('\n  ')}` : ''),
  );
  if (opts.json) console.log(JSON.stringify(result));
  process.exitCode = result.pass ? 0 : 1;
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 2;
});
