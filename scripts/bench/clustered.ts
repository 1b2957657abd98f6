/**
 * `npm run bench:clustered`: the fused kernel's backward on random logits (as `npm run bench` uses) and on logits
 * whose hard pixels lie in bands, as in real label maps (boundaries, hard regions). Backward loads only the
 * 16-pixel lines that hold a selected pixel (docs/performance.md), so its time follows how many lines that is;
 * this prints that share and the times for both kinds of logits. Addon only: PyTorch's backward does not depend on
 * where the selected pixels lie.
 *
 *   npm run bench:clustered
 *   npm run bench:clustered -- --size 8x19x512x1024 --p 0.25 --threads 2 --reps 10
 */
import { Command, Option } from 'commander';
import * as bce from '../../lib';
import { mulberry32 } from '../../test/helpers/prng';
import { fraction, positiveInteger, shape as shapeOption } from '../cli-numbers';

const options = new Command()
  .addOption(
    new Option('--size <NxCxHxW>', 'logit shape')
      .default([8, 19, 512, 1024], '8x19x512x1024')
      .argParser(shapeOption('--size', { min: 4, max: 4 })),
  )
  .addOption(new Option('--p <p>', 'kept fraction').default(0.25).argParser(fraction('--p')))
  .addOption(new Option('--threads <n>', 'intra-op threads').default(2).argParser(positiveInteger('--threads')))
  .addOption(
    new Option('--reps <n>', 'timed calls per kind of logits').default(10).argParser(positiveInteger('--reps')),
  )
  .parse()
  .opts<{ size: number[]; p: number; threads: number; reps: number }>();

const { size: shape, p, threads, reps } = options;
const [N, C, H, W] = shape;
bce.setNumThreads(threads);

/**
 * Labels constant over 48x80 tiles; logits: small noise on every class plus a margin on the label's logit that
 * follows |sin(h / 41 + n) sin(w / 59)| (0 to 5): the pixels with the largest losses lie along the bands where the
 * margin is near 0.
 */
function banded(): { x: bce.Tensor; y: bce.Tensor } {
  const logits = new Float32Array(N * C * H * W);
  const labels = new BigInt64Array(N * H * W);
  const uniform = mulberry32(12345);
  for (let i = 0; i < logits.length; i++) logits[i] = (uniform() + uniform() + uniform() - 1.5) * 0.8;
  for (let n = 0; n < N; n++) {
    for (let h = 0; h < H; h++) {
      for (let w = 0; w < W; w++) {
        const label = (Math.floor(h / 48) * 7 + Math.floor(w / 80) * 3 + n) % C;
        labels[(n * H + h) * W + w] = BigInt(label);
        logits[((n * C + label) * H + h) * W + w] += 5 * Math.abs(Math.sin(h / 41 + n) * Math.sin(w / 59));
      }
    }
  }
  return { x: bce.tensor(logits, { shape: [N, C, H, W] }), y: bce.tensor(labels, { shape: [N, H, W] }) };
}

/** Share of 16-pixel lines (of one class row) that hold at least one of the k largest losses. */
function linesWithSelected(x: bce.Tensor, y: bce.Tensor): number {
  const losses = bce.tidy(() => bce.crossEntropy(x, y, { reduction: 'none' }).toArray() as Float32Array);
  const k = Math.max(1, Math.floor(p * losses.length + 1e-9));
  const threshold = Float32Array.from(losses).sort().reverse()[k - 1];
  let lines = 0;
  let withSelected = 0;
  for (let start = 0; start < losses.length; start += 16) {
    lines++;
    for (let j = start; j < Math.min(start + 16, losses.length); j++) {
      if (losses[j] >= threshold) {
        withSelected++;
        break;
      }
    }
  }
  return withSelected / lines;
}

function backwardTimes(x: bce.Tensor, y: bce.Tensor): number[] {
  const times: number[] = [];
  for (let i = 0; i < reps + 2; i++) {
    const leaf = x.detach();
    leaf.requiresGrad = true;
    const r = bce.bootstrappedCrossEntropyWithStats(leaf, y, 0, p, { impl: 'fused' });
    const t0 = process.hrtime.bigint();
    r.loss.backward();
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    if (i >= 2) times.push(ms); // the first two calls map the gradient's memory
    r.loss.dispose();
    leaf.dispose();
  }
  return times.sort((a, b) => a - b);
}

bce.manualSeed(0);
const kinds = { random: { x: bce.randn(shape), y: bce.randint(0, C, [N, H, W]) }, banded: banded() };
console.log(
  `fused backward, ${shape.join('x')}, p = ${p}, ${threads} thread(s), ${reps} calls each (cpuKernels ${bce.info().cpuKernels})`,
);
for (const [name, { x, y }] of Object.entries(kinds)) {
  const share = linesWithSelected(x, y);
  const times = backwardTimes(x, y);
  const median = times[times.length >> 1];
  console.log(
    `${name.padEnd(7)} lines with a selected pixel ${(share * 100).toFixed(1).padStart(5)} %   backward median ${median.toFixed(2)} ms, min ${times[0].toFixed(2)} ms`,
  );
}
