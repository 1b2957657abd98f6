/**
 * Seeded inputs for comparing the fused kernel's CPU code paths (AVX-512, AVX2 and baseline) with each other and with the
 * reference path, shared by test/fused.test.ts and the child process it starts (test/helpers/fused-child.ts).
 */
import * as bce from '../../lib';
import { mulberry32 } from './prng';

export interface FusedCase {
  name: string;
  shape: number[]; // (N, C, ...)
  logits: number[];
  target: number[];
  weight?: number[];
  ignoreIndex: number;
  p: number;
}

export interface FusedRun {
  loss: number;
  k: number;
  fused: boolean;
  grad: number[];
}

function build(
  name: string,
  seed: number,
  shape: number[],
  opts: { ignored?: number; weighted?: boolean; p: number; special?: boolean; spread?: number; hardBands?: boolean },
): FusedCase {
  const random = mulberry32(seed);
  const [N, C] = shape;
  const spatial = shape.slice(2).reduce((a, b) => a * b, 1);
  const spread = opts.spread ?? 4;
  const logits = Array.from({ length: N * C * spatial }, () => Math.fround((random() * 2 - 1) * spread));
  const target = Array.from({ length: N * spatial }, () =>
    random() < (opts.ignored ?? 0) ? 255 : Math.floor(random() * C),
  );
  if (opts.special) {
    // A -inf logit in a non-label class, an ignored pixel with NaN, a NaN and a +inf logit in valid pixels.
    target[3] = 0;
    logits[(0 * C + 1) * spatial + 3] = -Infinity;
    target[5] = 255;
    logits[(0 * C + 0) * spatial + 5] = NaN;
    logits[(0 * C + 2) * spatial + 40] = NaN;
    logits[(0 * C + 0) * spatial + 70] = Infinity;
  }
  if (opts.hardBands) {
    // Easy pixels (label logit raised by 40) except in every 4th run of 512: the selected pixels cluster, so whole
    // lines and chunks hold none, as hard pixels do in real label maps.
    for (let n = 0; n < N; n++) {
      for (let s = 0; s < spatial; s++) {
        const y = target[n * spatial + s];
        if (Math.floor(s / 512) % 4 !== 0 && y !== 255) logits[(n * C + y) * spatial + s] += 40;
      }
    }
  }
  const weight = opts.weighted ? Array.from({ length: C }, () => 0.25 + random() * 2) : undefined;
  return { name, shape, logits, target, weight, ignoreIndex: 255, p: opts.p };
}

export function fusedCases(): FusedCase[] {
  return [
    build('19 classes, 64x80, ignored pixels, class weights', 1, [1, 19, 64, 80], {
      ignored: 0.1,
      weighted: true,
      p: 0.25,
    }),
    build('5 classes, 2x300x256 (histogram select)', 2, [2, 5, 300, 256], { ignored: 0.05, p: 0.15 }),
    build('3 classes, 7x9 (no full 16-pixel block)', 3, [1, 3, 7, 9], { p: 0.5 }),
    build('(N, C) rows, 3000 x 7', 4, [3000, 7], { ignored: 0.1, weighted: true, p: 0.3 }),
    build('non-finite logits, 4 classes, 4096 pixels', 5, [1, 4, 4096], { p: 0.5, special: true }),
    // Logits in (-160, 160): most exps fall below 2^-126, where the AVX2 sum clamps and the portable loop gives 0.
    build('19 classes, logits spread over +-160', 6, [2, 19, 32, 48], { ignored: 0.05, p: 0.4, spread: 160 }),
    // Class rows 4104 floats apart (32-byte but not 64-byte steps: the AVX-512 gradient stores go in halves) and
    // 4100 apart (unaligned rows: plain stores).
    build('6 classes, rows of 4104 pixels', 7, [1, 6, 4104], { ignored: 0.05, p: 0.25 }),
    build('3 classes, 2 x 4100 pixels', 8, [2, 3, 4100], { p: 0.2 }),
    build('19 classes, 2x64x256, hard pixels in bands', 10, [2, 19, 64, 256], {
      ignored: 0.02,
      p: 0.2,
      hardBands: true,
    }),
    // 272 pixels per sample: a run of one 256-pixel chunk and one of 16 (a short chunk of whole lines).
    build('5 classes, 3 x 272 pixels (a 16-pixel chunk)', 11, [3, 5, 272], { ignored: 0.05, p: 0.3 }),
  ];
}

export function runCase(c: FusedCase, impl: 'fused' | 'reference'): FusedRun {
  return bce.tidy(() => {
    const input = bce.tensor(c.logits, { shape: c.shape, dtype: 'float32', requiresGrad: true });
    const target = bce.tensor(c.target, { shape: [c.shape[0], ...c.shape.slice(2)], dtype: 'int64' });
    const weight = c.weight ? bce.tensor(c.weight, { dtype: 'float32' }) : undefined;
    const r = bce.bootstrappedCrossEntropyWithStats(input, target, 0, c.p, {
      impl,
      ignoreIndex: c.ignoreIndex,
      weight,
    });
    r.loss.backward();
    return { loss: r.loss.item(), k: r.k, fused: r.fused, grad: Array.from(input.grad!.toArray() as Float32Array) };
  });
}

/**
 * Each pixel's loss as pass 1 computes it, one call per pixel: every other label is ignored, so the pool holds one
 * pixel and the mean loss is that pixel's float32 loss, with no rounding of a sum over pixels in between (which
 * would hide a last-bit difference). 8 full blocks of 16 pixels (the vector code), 19 weighted classes, logits
 * spread over +-12.
 */
export function perPixelLosses(): number[] {
  const random = mulberry32(9);
  const C = 19;
  const S = 128;
  const logits = Array.from({ length: C * S }, () => Math.fround((random() * 2 - 1) * 12));
  const labels = Array.from({ length: S }, () => Math.floor(random() * C));
  const weight = Array.from({ length: C }, () => 0.25 + random() * 2);
  return bce.tidy(() => {
    const input = bce.tensor(logits, { shape: [1, C, S], dtype: 'float32' });
    const w = bce.tensor(weight, { dtype: 'float32' });
    return labels.map((label, pixel) => {
      const target = bce.tensor(
        labels.map((_, j) => (j === pixel ? label : 255)),
        { shape: [1, S], dtype: 'int64' },
      );
      const r = bce.bootstrappedCrossEntropyWithStats(input, target, 0, 1, {
        impl: 'fused',
        ignoreIndex: 255,
        weight: w,
      });
      if (!r.fused || r.k !== 1) throw new Error(`pixel ${pixel}: fused ${r.fused}, k ${r.k}`);
      return r.loss.item();
    });
  });
}
