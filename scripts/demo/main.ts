/**
 * The main demo: why bootstrapping helps. Trains the small TorchScript network in models/segnet.pt twice from the
 * same initial weights and the same synthetic data stream, once with plain cross-entropy and once with
 * bootstrapped cross-entropy (hardest p of the pixels, after a linear warm-up), then compares per-class IoU on
 * held-out images and writes a plot (loss curves, the p schedule, per-class IoU) as SVG.
 *
 *   npm run demo -- [--iterations 1000] [--seed 1] [--device cpu] [--out demo-output] [--nproc 1] [--help]
 *
 * With --nproc N > 1 the demo starts N ranks (bin/bootstrapped-ce-run.js) that train data-parallel
 * (DistributedDataParallel, gradients averaged over the ranks), each on its share of a global batch of N x batch
 * images, with the bootstrapped loss's hardest pixels selected over the whole global batch (scope 'global').
 */
import { spawn } from 'child_process';
import * as net from 'net';
import * as fs from 'fs';
import * as path from 'path';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { fraction, nonNegativeInteger, positiveInteger, positiveNumber } from '../cli-numbers';
import * as cliProgress from 'cli-progress';
import * as bce from '../../lib';
import { mulberry32 } from '../../test/helpers/prng';
import { CLASS_NAMES, NUM_CLASSES, SIZE, classFrequencies, makeBatch } from './synthetic';

const MODEL = path.join(__dirname, '..', '..', 'models', 'segnet.pt');

interface Flags {
  device: string;
  iterations: number;
  out: string;
  seed: number;
  batch: number;
  lr: number;
  p: number;
  evalImages: number;
  threads: number;
  nproc: number;
}

function device(value: string): string {
  if (!/^(cpu|cuda(:\d{1,3})?)$/.test(value))
    throw new InvalidArgumentError(`--device expects 'cpu', 'cuda' or 'cuda:N', got '${value}'`);
  return value;
}

function parseFlags(argv: string[]): Flags {
  const program = new Command()
    .name('npm run demo --')
    .description(
      'Trains a small segmentation network twice on a synthetic task where easy pixels dominate, with plain and ' +
        'with bootstrapped cross-entropy, and compares per-class IoU on held-out images.',
    )
    .addOption(new Option('--device <device>', "'cpu', 'cuda' or 'cuda:N'").default('cpu').argParser(device))
    .addOption(
      new Option('--iterations <n>', 'training iterations of each run')
        .default(1000)
        .argParser(positiveInteger('--iterations')),
    )
    .addOption(new Option('--out <dir>', 'folder for the plot and the metrics').default('demo-output'))
    .addOption(
      new Option('--seed <n>', 'seed of the data stream (the network starts from models/segnet.pt)')
        .default(1)
        .argParser(nonNegativeInteger('--seed')),
    )
    .addOption(new Option('--batch <n>', 'images per iteration').default(4).argParser(positiveInteger('--batch')))
    .addOption(new Option('--lr <x>', 'Adam learning rate').default(3e-3).argParser(positiveNumber('--lr')))
    .addOption(
      new Option('--p <x>', 'fraction of hardest pixels kept after warm-up').default(0.15).argParser(fraction('--p')),
    )
    .addOption(
      new Option('--eval-images <n>', 'held-out images for IoU')
        .default(64)
        .argParser(positiveInteger('--eval-images')),
    )
    .addOption(new Option('--threads <n>', 'LibTorch CPU threads').default(2).argParser(positiveInteger('--threads')))
    .addOption(
      new Option('--nproc <n>', 'data-parallel processes (--batch images each), global top-k')
        .default(1)
        .argParser(positiveInteger('--nproc')),
    )
    .allowExcessArguments(false)
    .exitOverride()
    .configureOutput({ writeErr: () => undefined });
  try {
    program.parse(argv);
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === 'commander.helpDisplayed' || error.code === 'commander.help') process.exit(0);
      process.stderr.write(`${error.message}\n\n${program.helpInformation()}`);
      process.exit(2);
    }
    throw error;
  }
  return program.opts<Flags>();
}

interface RunResult {
  name: string;
  losses: number[];
  ps: number[];
  iou: number[];
  seconds: number;
}

async function train(
  name: string,
  flags: Flags,
  bootstrapped: boolean,
  group: bce.ProcessGroup | undefined,
): Promise<RunResult> {
  const model = bce.jit.load(MODEL, { device: flags.device }).train();
  const ddp = group ? await bce.DistributedDataParallel.create(model, { group }) : undefined;
  const optimizer = new bce.optim.Adam(model.parameters(), { lr: flags.lr });
  const world = group?.worldSize ?? 1;
  const rank = group?.rank ?? 0;
  const plane = SIZE * SIZE;
  const random = mulberry32(flags.seed);
  // Warm-up: p = 1 for the first 10% of the iterations, then linearly down to p at 40%.
  const schedule = bce.schedules.linear(Math.round(flags.iterations * 0.1), Math.round(flags.iterations * 0.4));
  const losses: number[] = [];
  const ps: number[] = [];
  const bar = new cliProgress.SingleBar(
    {
      format: `${name.padEnd(13)} {bar} {value}/{total} | loss {loss} | p {p} | {speed} it/s`,
      hideCursor: true,
      clearOnComplete: false,
    },
    cliProgress.Presets.shades_classic,
  );
  if (rank === 0) bar.start(flags.iterations, 0, { loss: '-', p: '-', speed: '-' });
  const start = Date.now();
  for (let iteration = 0; iteration < flags.iterations; iteration++) {
    const { loss, p } = bce.trainStep(() => {
      // Every rank draws the global batch from the same stream and keeps its own share.
      const batch = makeBatch(random, flags.batch * world);
      const from = rank * flags.batch;
      const n = flags.batch;
      const images = bce.tensor(batch.images.subarray(from * 3 * plane, (from + n) * 3 * plane), {
        shape: [n, 3, SIZE, SIZE],
        device: flags.device,
      });
      const labels = bce.tensor(batch.labels.subarray(from * plane, (from + n) * plane), {
        shape: [n, SIZE, SIZE],
        device: flags.device,
      });
      const logits = model.forward(images);
      let value: bce.Tensor;
      let p = 1;
      if (bootstrapped) {
        const result = bce.bootstrappedCrossEntropyWithStats(logits, labels, iteration, flags.p, {
          warmup: schedule,
          ...(group ? { scope: 'global' as const, group } : {}),
        });
        value = result.loss;
        p = result.p;
      } else {
        value = bce.crossEntropy(logits, labels);
      }
      optimizer.zeroGrad();
      value.backward();
      ddp?.averageGradientsSync();
      optimizer.step();
      if (!group) return { loss: value.item(), p };
      // The loss of the global batch: the ranks' losses averaged (each is scaled for exactly that).
      const shown = value.detach().reshape([1]);
      group.allReduceSync(shown, 'avg');
      return { loss: shown.item(), p };
    });
    losses.push(loss);
    ps.push(p);
    const seconds = (Date.now() - start) / 1000;
    if (rank === 0)
      bar.update(iteration + 1, {
        loss: loss.toFixed(4),
        p: p.toFixed(3),
        speed: ((iteration + 1) / seconds).toFixed(2),
      });
  }
  if (rank === 0) bar.stop();
  const seconds = (Date.now() - start) / 1000;
  // The replicas are equal: rank 0 evaluates.
  const iou = rank === 0 ? evaluate(model, flags) : [];
  model.dispose();
  return { name, losses, ps, iou, seconds };
}

/**
 * Per-class IoU over held-out images (a data stream seeded apart from training's). The argmax and the confusion
 * matrix are computed on the device; only the NUM_CLASSES x NUM_CLASSES matrix's IoU comes back to the host.
 * A class absent from both labels and predictions (no IoU: NaN) counts as 0, as in the table's means.
 */
function evaluate(model: bce.Module, flags: Flags): number[] {
  model.eval();
  const random = mulberry32((flags.seed ^ 0x5eed5eed) >>> 0);
  let total = bce.zeros([NUM_CLASSES, NUM_CLASSES], { dtype: 'int64', device: flags.device });
  const chunk = 16;
  for (let done = 0; done < flags.evalImages; done += chunk) {
    const n = Math.min(chunk, flags.evalImages - done);
    const batch = makeBatch(random, n);
    const next = bce.tidy(() =>
      bce.noGrad(() => {
        const images = bce.tensor(batch.images, { shape: [n, 3, SIZE, SIZE], device: flags.device });
        const labels = bce.tensor(batch.labels, { shape: [n, SIZE, SIZE], device: flags.device });
        const predicted = model.forward(images).argmax(1);
        return total.add(bce.confusionMatrix(predicted, labels, NUM_CLASSES));
      }),
    );
    total.dispose();
    total = next;
  }
  const perClass = Array.from(bce.tidy(() => bce.iou(total).toArray()) as Float64Array, (v) =>
    Number.isNaN(v) ? 0 : v,
  );
  total.dispose();
  return perClass;
}

const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;

function printTable(runs: RunResult[]): string {
  const header = ['class', ...runs.map((r) => r.name)];
  const rows = CLASS_NAMES.map((name, c) => [name, ...runs.map((r) => (100 * r.iou[c]).toFixed(1))]);
  rows.push(['mIoU', ...runs.map((r) => (100 * mean(r.iou)).toFixed(1))]);
  rows.push(['mIoU rare (2-4)', ...runs.map((r) => (100 * mean(r.iou.slice(2))).toFixed(1))]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) =>
    cells.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join('  ');
  return [line(header), ...rows.map(line)].join('\n');
}

/** Loss curves, the p schedule and per-class IoU, as one SVG (vega-lite, rendered headless by vega). */
async function writePlot(runs: RunResult[], flags: Flags, file: string): Promise<void> {
  // vega and vega-lite are ES modules; a real dynamic import (not compiled to require) loads them from CommonJS.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- vega's typings are ES-module only
  const importEsm = new Function('specifier', 'return import(specifier)') as (s: string) => Promise<any>;
  const [vega, vegaLite] = await Promise.all([importEsm('vega'), importEsm('vega-lite')]);
  const smooth = (values: number[]) => {
    const out: number[] = [];
    let s = values[0];
    for (const v of values) out.push((s = 0.9 * s + 0.1 * v));
    return out;
  };
  const lossRows = runs.flatMap((r) => smooth(r.losses).map((loss, iteration) => ({ run: r.name, iteration, loss })));
  const pRows = runs[1].ps.map((p, iteration) => ({ iteration, p }));
  const iouRows = runs.flatMap((r) => [
    ...CLASS_NAMES.map((name, c) => ({ run: r.name, class: name, iou: r.iou[c] })),
    { run: r.name, class: 'mIoU', iou: mean(r.iou) },
  ]);
  const color = { field: 'run', type: 'nominal', title: 'loss' };
  const spec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: `bootstrapped vs plain cross-entropy (${flags.iterations} iterations, seed ${flags.seed})`,
    hconcat: [
      {
        vconcat: [
          {
            title: 'training loss (EMA 0.9)',
            width: 380,
            height: 180,
            data: { values: lossRows },
            mark: 'line',
            encoding: {
              x: { field: 'iteration', type: 'quantitative' },
              y: { field: 'loss', type: 'quantitative', scale: { type: 'log' } },
              color,
            },
          },
          {
            title: 'p schedule (fraction of pixels kept)',
            width: 380,
            height: 120,
            data: { values: pRows },
            mark: 'line',
            encoding: {
              x: { field: 'iteration', type: 'quantitative' },
              y: { field: 'p', type: 'quantitative', scale: { domain: [0, 1] } },
            },
          },
        ],
      },
      {
        title: 'held-out IoU per class',
        width: 320,
        height: 340,
        data: { values: iouRows },
        mark: 'bar',
        encoding: {
          x: { field: 'class', type: 'nominal', sort: [...CLASS_NAMES, 'mIoU'], title: null },
          xOffset: { field: 'run' },
          y: { field: 'iou', type: 'quantitative', scale: { domain: [0, 1] }, title: 'IoU' },
          color,
        },
      },
    ],
  };
  const compiled = vegaLite.compile(spec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  fs.writeFileSync(file, await view.toSVG());
  view.finalize();
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Runs this demo again as --nproc ranks under the launcher; resolves with its exit code. */
async function launchRanks(flags: Flags): Promise<number> {
  const launcher = path.join(__dirname, '..', '..', 'bin', 'bootstrapped-ce-run.js');
  const args = [launcher, '--nproc-per-node', String(flags.nproc), '--master-port', String(await freePort())];
  const child = spawn(process.execPath, [...args, __filename, ...process.argv.slice(2)], { stdio: 'inherit' });
  return new Promise((resolve) => child.on('exit', (code) => resolve(code ?? 1)));
}

async function main(): Promise<void> {
  const flags = parseFlags(process.argv);
  if (flags.nproc > 1 && process.env.RANK === undefined) process.exit(await launchRanks(flags));
  const group = flags.nproc > 1 ? await bce.distributed.initProcessGroup() : undefined;
  if (group && group.worldSize !== flags.nproc) {
    throw new Error(`--nproc ${flags.nproc} but the launcher started ${group.worldSize} ranks`);
  }
  const rank = group?.rank ?? 0;
  // Only rank 0 talks.
  const log = (line: string) => rank === 0 && console.log(line);
  bce.setNumThreads(flags.threads);
  if (flags.device.startsWith('cuda') && !bce.cuda.isAvailable()) {
    process.stderr.write(`--device ${flags.device}: CUDA is not available in this LibTorch build or machine\n`);
    process.exit(2);
  }
  fs.mkdirSync(flags.out, { recursive: true });
  const sample = makeBatch(mulberry32(flags.seed), 64);
  const counts = classFrequencies(sample.labels);
  const total = counts.reduce((a, b) => a + b, 0);
  log(
    `Synthetic task, ${SIZE}x${SIZE}, pixel share: ` +
      CLASS_NAMES.map((name, c) => `${name} ${((100 * counts[c]) / total).toFixed(1)}%`).join(', '),
  );
  const ranks = group ? ` x ${group.worldSize} ranks (data-parallel, global top-k)` : '';
  log(
    `Training ${path.relative(process.cwd(), MODEL)} for ${flags.iterations} iterations of ${flags.batch} images${ranks} on ` +
      `${flags.device} (Adam, lr ${flags.lr}; bootstrapped: p ${flags.p}, linear warm-up)\n`,
  );
  const started = Date.now();
  const cpuStart = process.cpuUsage();
  const plain = await train('cross-entropy', flags, false, group);
  const boot = await train('bootstrapped', flags, true, group);
  const runs = [plain, boot];
  if (rank !== 0) {
    bce.distributed.destroyProcessGroup();
    return;
  }
  console.log(`\nHeld-out IoU (%) on ${flags.evalImages} images:\n${printTable(runs)}\n`);
  const svg = path.join(flags.out, 'demo.svg');
  await writePlot(runs, flags, svg);
  const metrics = {
    flags,
    classes: CLASS_NAMES,
    runs: runs.map((r) => ({
      name: r.name,
      seconds: r.seconds,
      iou: r.iou,
      miou: mean(r.iou),
      finalLoss: r.losses[r.losses.length - 1],
    })),
    totalSeconds: (Date.now() - started) / 1000,
    cpuSeconds: (() => {
      const cpu = process.cpuUsage(cpuStart);
      return (cpu.user + cpu.system) / 1e6;
    })(),
  };
  fs.writeFileSync(path.join(flags.out, 'metrics.json'), `${JSON.stringify(metrics, null, 2)}\n`);
  console.log(
    `Wrote ${svg} and ${path.join(flags.out, 'metrics.json')} (${metrics.totalSeconds.toFixed(1)} s in all, ${metrics.cpuSeconds.toFixed(1)} s of CPU time)`,
  );
  bce.distributed.destroyProcessGroup();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
