/**
 * Independent truth for the loss tests: cross-entropy of small inputs computed in plain JavaScript (float64),
 * from the textbook formulas, without LibTorch.
 */

/** Logits (N, C, S) given as nested arrays [n][c][s]; returns per-pixel log-softmax [n][s][c]. */
export function logSoftmax(logits: number[][][]): number[][][] {
  return logits.map((sample) => {
    const C = sample.length;
    const S = sample[0].length;
    const out: number[][] = [];
    for (let s = 0; s < S; s++) {
      const column = sample.map((row) => row[s]);
      const max = Math.max(...column);
      const lse = max + Math.log(column.reduce((acc, x) => acc + Math.exp(x - max), 0));
      out.push(column.map((x) => x - lse));
    }
    void C;
    return out;
  });
}

/**
 * Per-pixel cross-entropy as PyTorch defines it (reduction 'none'), with class weights and label smoothing:
 * (1 - e) * w[y] * (-log p_y) + (e / C) * sum_c w[c] * (-log p_c); 0 for ignored pixels.
 */
export function pixelLosses(
  logits: number[][][],
  target: number[][],
  {
    weight,
    ignoreIndex = -100,
    labelSmoothing = 0,
  }: { weight?: number[]; ignoreIndex?: number; labelSmoothing?: number } = {},
): number[][] {
  const logp = logSoftmax(logits);
  const C = logits[0].length;
  const w = weight ?? new Array(C).fill(1);
  return target.map((row, n) =>
    row.map((y, s) => {
      if (y === ignoreIndex) return 0;
      const nll = -logp[n][s][y] * w[y];
      const smooth = logp[n][s].reduce((acc, lp, c) => acc - lp * w[c], 0);
      return (1 - labelSmoothing) * nll + (labelSmoothing / C) * smooth;
    }),
  );
}

/** Indices of the k largest values (ties: lowest index first). */
export function topkIndices(values: number[], k: number, eligible: boolean[]): number[] {
  return values
    .map((v, i) => ({ v, i }))
    .filter(({ i }) => eligible[i])
    .sort((a, b) => b.v - a.v || a.i - b.i)
    .slice(0, k)
    .map(({ i }) => i);
}

/** k = clamp(floor(p * n + 1e-9), 1, n); 0 when n = 0. */
export function keepCount(p: number, n: number): number {
  if (n === 0) return 0;
  return Math.min(Math.max(Math.floor(p * n + 1e-9), 1), n);
}

/** Random logits [n][c][s] in [-3, 3). */
export function randomLogits(random: () => number, N: number, C: number, S: number): number[][][] {
  return Array.from({ length: N }, () =>
    Array.from({ length: C }, () => Array.from({ length: S }, () => random() * 6 - 3)),
  );
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expectSameLength(a, b);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

function expectSameLength(a: ArrayLike<number>, b: ArrayLike<number>): void {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
}
