/**
 * Deterministic batches for the distributed tests: every rank builds the whole batch from the same seed and keeps
 * its own samples, so that the ranks' shards concatenated in rank order are the whole batch, which the test then
 * computes in one process.
 */
import { mulberry32 } from './prng';

export const CLASSES = 4;
export const IGNORE = 255;

export interface LossBatch {
  logits: Float32Array | Float64Array;
  labels: Int32Array;
  /** [n, C, h, w] of the logits; the labels are [n, h, w]. */
  shape: number[];
}

/**
 * n samples of CLASSES x h x w logits with labels. `ties`: logits drawn from three fixed patterns, so that many
 * pixels have exactly equal losses (the selection's tie rule decides); `ignoreRate`: the share of IGNORE labels.
 */
export function lossBatch(
  seed: number,
  n: number,
  h: number,
  w: number,
  options: { ties: boolean; ignoreRate: number; float64?: boolean },
): LossBatch {
  const random = mulberry32(seed);
  const plane = h * w;
  const logits = options.float64 ? new Float64Array(n * CLASSES * plane) : new Float32Array(n * CLASSES * plane);
  const labels = new Int32Array(n * plane);
  const patterns = [
    [0.5, -0.25, 1.0, 0.0],
    [2.0, 0.0, -1.0, 0.5],
    [0.0, 0.0, 0.0, 0.0],
  ];
  for (let s = 0; s < n; s++) {
    for (let i = 0; i < plane; i++) {
      const pattern = patterns[Math.floor(random() * patterns.length)];
      for (let c = 0; c < CLASSES; c++) {
        logits[(s * CLASSES + c) * plane + i] = options.ties ? pattern[c] : 4 * random() - 2;
      }
      labels[s * plane + i] = random() < options.ignoreRate ? IGNORE : Math.floor(random() * CLASSES);
    }
  }
  return { logits, labels, shape: [n, CLASSES, h, w] };
}

/** Samples [from, to) of a batch. */
export function shard(batch: LossBatch, from: number, to: number): LossBatch {
  const [, c, h, w] = batch.shape;
  const plane = h * w;
  return {
    logits: batch.logits.slice(from * c * plane, to * c * plane),
    labels: batch.labels.slice(from * plane, to * plane),
    shape: [to - from, c, h, w],
  };
}

export const CLASS_WEIGHTS = [1.0, 2.5, 0.5, 1.5];

/** Images [n, 3, size, size] and labels [n, size, size] in [0, 5) for models/segnet.pt, one batch per step. */
export function trainingBatch(step: number, n: number, size: number): { images: Float32Array; labels: Int32Array } {
  const random = mulberry32(1000 + step);
  const plane = size * size;
  const images = new Float32Array(n * 3 * plane);
  const labels = new Int32Array(n * plane);
  for (let s = 0; s < n; s++) {
    for (let i = 0; i < plane; i++) {
      const cls = Math.floor(random() * 5);
      labels[s * plane + i] = cls;
      for (let c = 0; c < 3; c++) images[(s * 3 + c) * plane + i] = 0.3 * cls - 0.6 + 0.4 * (random() - 0.5) + 0.1 * c;
    }
  }
  return { images, labels };
}
