/**
 * A short tour: bootstrapped cross-entropy through a linear warm-up on a small synthetic batch. Prints, per
 * iteration, the effective p, the number of pixels kept (k) and the loss, then runs backward.
 *
 *   npm run example
 */
import * as bce from '../lib';

bce.manualSeed(0);
const [N, C, H, W] = [2, 19, 32, 32];
const ignoreIndex = 255;

const logits = bce.randn([N, C, H, W], { requiresGrad: true });
// Labels with a void border (ignoreIndex), as segmentation datasets have.
const labels = new BigInt64Array(N * H * W);
const random = bce.randint(0, C, [N, H, W]).toArray() as BigInt64Array;
for (let i = 0; i < labels.length; i++) {
  const x = i % W;
  const y = Math.floor(i / W) % H;
  labels[i] = x < 2 || y < 2 ? BigInt(ignoreIndex) : random[i];
}
const target = bce.tensor(labels, { shape: [N, H, W] });

const schedule = bce.schedules.linear(2, 8);
console.log(`logits ${logits}, target ${target}, warm-up linear from iteration 2 to 8, p = 0.15\n`);
console.log('iteration      p       k   nValid     loss');
for (let iteration = 0; iteration <= 10; iteration++) {
  bce.tidy(() => {
    const { loss, p, k, nValid } = bce.bootstrappedCrossEntropyWithStats(logits, target, iteration, 0.15, {
      warmup: schedule,
      ignoreIndex,
    });
    console.log(
      `${String(iteration).padStart(9)} ${p.toFixed(3).padStart(6)} ${String(k).padStart(7)} ${String(nValid).padStart(8)} ${loss.item().toFixed(5).padStart(8)}`,
    );
  });
}

const loss = bce.bootstrappedCrossEntropy(logits, target, 10, 0.15, { warmup: schedule, ignoreIndex });
loss.backward();
const grad = logits.grad!;
const nonZeroPixels = (grad.toArray() as Float32Array).filter((g) => g !== 0).length / C;
console.log(`\nbackward: gradient reaches ${nonZeroPixels} pixels (the k selected ones)`);
console.log(
  `plain cross-entropy for comparison: ${bce.crossEntropy(logits, target, { ignoreIndex }).item().toFixed(5)}`,
);
console.log(`LibTorch ${bce.info().libtorchVersion} from ${bce.info().loadedFrom}`);
