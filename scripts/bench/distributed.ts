/**
 * `npm run bench:distributed`: what the global top-k (`scope: 'global'`) costs. Two ranks on this machine, each
 * with its own leaf logits tensor (no model); per step, the bootstrapped loss's forward and backward with the
 * selection over both ranks' pixels (scope 'global') and over this rank's only (scope 'process'). Both use the
 * reference implementation (cross_entropy, then the selection), which is what scope 'global' always runs, so the
 * difference is the distributed selection. Prints the median step times (the slower rank's, as a data-parallel step
 * waits for it) and the bytes and all-reduce rounds per call from the loss's stats.
 *
 *   npm run bench:distributed
 *   npm run bench:distributed -- --size 2x19x256x512 --p 0.25 --steps 5 --warmup 1 --threads 1
 *
 * The script runs itself under the launcher (bin/bootstrapped-ce-run.js --nproc-per-node 2) when started without
 * RANK set.
 */
import { spawnSync } from 'child_process';
import * as path from 'path';
import { Command, Option } from 'commander';
import * as bce from '../../lib';
import { fraction, nonNegativeInteger, positiveInteger, shape as shapeOption } from '../cli-numbers';

const options = new Command()
  .addOption(
    new Option('--size <NxCxHxW>', 'logit shape per rank')
      .default([8, 19, 512, 1024], '8x19x512x1024')
      .argParser(shapeOption('--size', { min: 4, max: 4 })),
  )
  .addOption(new Option('--p <p>', 'kept fraction').default(0.25).argParser(fraction('--p')))
  .addOption(new Option('--steps <n>', 'timed steps per scope').default(5).argParser(positiveInteger('--steps')))
  .addOption(
    new Option('--warmup <n>', 'untimed steps per scope first').default(1).argParser(nonNegativeInteger('--warmup')),
  )
  .addOption(
    new Option('--threads <n>', 'intra-op threads per rank').default(1).argParser(positiveInteger('--threads')),
  )
  .addOption(new Option('--nproc <n>', 'ranks').default(2).argParser(positiveInteger('--nproc')))
  .addOption(
    new Option('--master-port <port>', 'rendezvous port').default(29517).argParser(positiveInteger('--master-port')),
  )
  .parse()
  .opts<{
    size: number[];
    p: number;
    steps: number;
    warmup: number;
    threads: number;
    nproc: number;
    masterPort: number;
  }>();

function launch(): void {
  const launcher = path.join(__dirname, '..', '..', 'bin', 'bootstrapped-ce-run.js');
  const result = spawnSync(
    process.execPath,
    [
      launcher,
      '--nproc-per-node',
      String(options.nproc),
      '--master-port',
      String(options.masterPort),
      __filename,
      ...process.argv.slice(2),
    ],
    { stdio: 'inherit' },
  );
  process.exit(result.status ?? 1);
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

async function rank(): Promise<void> {
  const { size, p, steps, warmup, threads } = options;
  bce.setNumThreads(threads);
  const group = await bce.distributed.initProcessGroup();
  const [N, C, H, W] = size;
  bce.manualSeed(1234 + group.rank);
  const logits = bce.randn([N, C, H, W]);
  logits.requiresGrad = true;
  const labels = bce.randint(0, C, [N, H, W]);

  // One step of each scope in turn, so that a change in the machine's load during the run affects both alike.
  const scopes: bce.Scope[] = ['process', 'global'];
  const times: number[][] = [[], []];
  const last: { k: number; communication?: { bytes: number; rounds: number } }[] = [{ k: 0 }, { k: 0 }];
  for (let step = 0; step < warmup + steps; step++) {
    scopes.forEach((scope, i) => {
      group.barrierSync(); // both ranks start the step together
      const started = process.hrtime.bigint();
      bce.tidy(() => {
        const result = bce.bootstrappedCrossEntropyWithStats(logits, labels, 0, p, { scope, impl: 'reference' });
        result.loss.backward();
        last[i] = { k: result.k, communication: result.communication };
      });
      if (step >= warmup) times[i].push(Number(process.hrtime.bigint() - started) / 1e6);
    });
  }
  const perProcess = { ms: median(times[0]), ...last[0] };
  const global = { ms: median(times[1]), ...last[1] };
  // The slower rank's medians: a data-parallel step waits for it.
  const gathered = group.allGatherSync(bce.tensor([perProcess.ms, global.ms], { dtype: 'float64' }));
  const slowest = [0, 1].map((i) => Math.max(...gathered.map((t) => Number((t.toArray() as Float64Array)[i]))));
  if (group.rank === 0) {
    const pixels = N * H * W;
    const extra = slowest[1] - slowest[0];
    const c = global.communication;
    console.log(
      `${group.worldSize} ranks, logits ${size.join('x')} float32 per rank (${pixels} pixels), p = ${p}, ` +
        `${threads} thread(s) per rank, median of ${steps} steps after ${warmup} warm-up`,
    );
    console.log('| scope | k | step (forward + backward) | bytes per call | rounds per call |');
    console.log('|---|---|---|---|---|');
    console.log(`| process | ${perProcess.k} (this rank) | ${slowest[0].toFixed(1)} ms | 0 | 0 |`);
    console.log(`| global | ${global.k} (all ranks) | ${slowest[1].toFixed(1)} ms | ${c?.bytes} | ${c?.rounds} |`);
    console.log(
      `global select adds ${extra.toFixed(1)} ms, ${((100 * extra) / slowest[0]).toFixed(1)} % of the per-process step`,
    );
  }
  bce.distributed.destroyProcessGroup();
}

if (process.env.RANK === undefined) launch();
else
  rank().catch((error) => {
    process.stderr.write(`rank ${process.env.RANK} failed: ${(error as Error).stack}\n`);
    process.exit(1);
  });
