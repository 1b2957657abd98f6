/**
 * A synthetic segmentation task where easy pixels dominate: 64x64 RGB images of a textured background (class 0)
 * and large blobs (class 1), plus rare classes: thin lines (2), small squares (3) and small crosses (4). Lines
 * are coloured close to the blobs and crosses close to the squares, so the rare classes are told apart by shape
 * as much as by colour. Everything is a pure function of the PRNG seed (mulberry32, no LibTorch RNG).
 */

export const CLASS_NAMES = ['background', 'blob', 'line', 'square', 'cross'] as const;
export const NUM_CLASSES = CLASS_NAMES.length;
export const SIZE = 64;

type Rgb = [number, number, number];
const BLOB: Rgb = [0.75, 0.35, 0.3];
const LINE: Rgb = [0.8, 0.5, 0.3];
const SQUARE: Rgb = [0.3, 0.4, 0.8];
const CROSS: Rgb = [0.35, 0.5, 0.7];

/** A batch: images N x 3 x 64 x 64 (float32, roughly centred on 0) and labels N x 64 x 64 (int32 class indices). */
export interface Batch {
  images: Float32Array;
  labels: Int32Array;
  n: number;
}

/** Draws `n` images from `random` (advancing it). */
export function makeBatch(random: () => number, n: number): Batch {
  const plane = SIZE * SIZE;
  const images = new Float32Array(n * 3 * plane);
  const labels = new Int32Array(n * plane);
  const gauss = () => {
    // Box-Muller from the same stream.
    const u = Math.max(random(), 1e-12);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
  };
  const jitter = (c: Rgb, amount: number): Rgb => c.map((v) => v + (random() - 0.5) * amount) as Rgb;
  for (let b = 0; b < n; b++) {
    const label = labels.subarray(b * plane, (b + 1) * plane);
    const colour: Rgb[] = new Array(plane);
    // Background: a random grey with a linear gradient.
    const base = 0.35 + 0.2 * random();
    const gx = (random() - 0.5) * 0.3;
    const gy = (random() - 0.5) * 0.3;
    for (let y = 0; y < SIZE; y++) {
      for (let x = 0; x < SIZE; x++) {
        const v = base + (gx * (x - 32) + gy * (y - 32)) / 64;
        colour[y * SIZE + x] = [v, v * (0.95 + 0.1 * random()), v];
      }
    }
    const paint = (x: number, y: number, cls: number, c: Rgb) => {
      if (x < 0 || y < 0 || x >= SIZE || y >= SIZE) return;
      label[y * SIZE + x] = cls;
      colour[y * SIZE + x] = c;
    };
    // Large blobs: 1-3 ellipses.
    const blobs = 1 + Math.floor(random() * 3);
    for (let i = 0; i < blobs; i++) {
      const cx = random() * SIZE;
      const cy = random() * SIZE;
      const rx = 7 + random() * 11;
      const ry = 7 + random() * 11;
      const c = jitter(BLOB, 0.15);
      for (let y = Math.floor(cy - ry); y <= cy + ry; y++) {
        for (let x = Math.floor(cx - rx); x <= cx + rx; x++) {
          if (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1) paint(x, y, 1, c);
        }
      }
    }
    // Thin lines: 1-3 one-pixel segments, over the blobs too.
    const lines = 1 + Math.floor(random() * 3);
    for (let i = 0; i < lines; i++) {
      const x0 = random() * SIZE;
      const y0 = random() * SIZE;
      const angle = random() * Math.PI;
      const length = 15 + random() * 30;
      const c = jitter(LINE, 0.15);
      for (let s = 0; s <= length; s += 0.5) {
        paint(Math.round(x0 + s * Math.cos(angle)), Math.round(y0 + s * Math.sin(angle)), 2, c);
      }
    }
    // Small squares (2x2 or 3x3) and small crosses (a 5x5 plus sign), 1-4 of each.
    const squares = 1 + Math.floor(random() * 4);
    for (let i = 0; i < squares; i++) {
      const x0 = Math.floor(random() * (SIZE - 3));
      const y0 = Math.floor(random() * (SIZE - 3));
      const side = 2 + Math.floor(random() * 2);
      const c = jitter(SQUARE, 0.15);
      for (let dy = 0; dy < side; dy++) for (let dx = 0; dx < side; dx++) paint(x0 + dx, y0 + dy, 3, c);
    }
    const crosses = 1 + Math.floor(random() * 4);
    for (let i = 0; i < crosses; i++) {
      const cx = 2 + Math.floor(random() * (SIZE - 4));
      const cy = 2 + Math.floor(random() * (SIZE - 4));
      const c = jitter(CROSS, 0.15);
      for (let d = -2; d <= 2; d++) {
        paint(cx + d, cy, 4, c);
        paint(cx, cy + d, 4, c);
      }
    }
    // Pixel noise, then centre on 0.
    const image = images.subarray(b * 3 * plane, (b + 1) * 3 * plane);
    for (let p = 0; p < plane; p++) {
      for (let ch = 0; ch < 3; ch++) image[ch * plane + p] = colour[p][ch] + 0.12 * gauss() - 0.5;
    }
  }
  return { images, labels, n };
}

/** Pixel counts per class in `labels`. */
export function classFrequencies(labels: Int32Array): number[] {
  const counts = new Array(NUM_CLASSES).fill(0);
  for (const l of labels) counts[l]++;
  return counts;
}
