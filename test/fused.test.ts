/**
 * The fused CPU kernel on pools of 65,536 pixels and more, where it selects with histograms over the loss bits
 * instead of nth_element (smaller pools, covered by loss.test.ts and the parity suite). Checked against
 * cross-entropy computed in JavaScript (test/helpers/reference.ts) from the same float32 logits, in float64.
 */
import { spawnSync } from 'child_process';
import * as path from 'path';
import * as bce from '../lib';
import { FusedRun, fusedCases, perPixelLosses, runCase } from './helpers/fused-cases';
import { mulberry32 } from './helpers/prng';
import { keepCount, pixelLosses } from './helpers/reference';

const IGNORE = 255;

interface Case {
  logits: number[][][]; // [n][c][s], float32 values
  target: number[][]; // [n][s]
  weight?: number[];
}

function tensors({ logits, target }: Case) {
  const N = logits.length;
  const C = logits[0].length;
  const S = logits[0][0].length;
  const input = bce.tensor(logits.flat(2), { shape: [N, C, S], dtype: 'float32', requiresGrad: true });
  const t = bce.tensor(target.flat(), { shape: [N, S], dtype: 'int64' });
  return { input, t, N, C, S };
}

/** Per-pixel softmax [n][s][c] in float64. */
function softmax(logits: number[][][]): number[][][] {
  return logits.map((sample) => {
    const S = sample[0].length;
    const out: number[][] = [];
    for (let s = 0; s < S; s++) {
      const column = sample.map((row) => row[s]);
      const max = Math.max(...column);
      const exps = column.map((x) => Math.exp(x - max));
      const sum = exps.reduce((a, b) => a + b, 0);
      out.push(exps.map((e) => e / sum));
    }
    return out;
  });
}

/** Runs the fused kernel ('mean') and returns its loss, k, and which pixels received a gradient. */
function runFused(c: Case, p: number) {
  const { input, t, N, C, S } = tensors(c);
  const weight = c.weight ? bce.tensor(c.weight, { dtype: 'float32' }) : undefined;
  const result = bce.bootstrappedCrossEntropyWithStats(input, t, 0, p, { impl: 'fused', ignoreIndex: IGNORE, weight });
  expect(result.fused).toBe(true);
  result.loss.backward();
  const grad = input.grad!.toArray() as Float32Array;
  const selected: number[] = []; // flat pixel indices n * S + s
  for (let n = 0; n < N; n++) {
    for (let s = 0; s < S; s++) {
      let any = false;
      for (let cls = 0; cls < C; cls++) any ||= grad[(n * C + cls) * S + s] !== 0;
      if (any) selected.push(n * S + s);
    }
  }
  return { loss: result.loss.item(), k: result.k, nValid: result.nValid, grad, selected, N, C, S };
}

/** Expected selection: the k largest valid losses, ties in pixel order. */
function expectedSelection(losses: number[], valid: boolean[], k: number) {
  const order = losses
    .map((v, i) => ({ v, i }))
    .filter(({ i }) => valid[i])
    .sort((a, b) => b.v - a.v || a.i - b.i);
  return { chosen: order.slice(0, k).map(({ i }) => i), kth: order[k - 1].v };
}

function randomCase(
  seed: number,
  N: number,
  C: number,
  S: number,
  draw: (random: () => number) => number,
  ignored: number,
  weight?: number[],
): Case {
  const random = mulberry32(seed);
  const logits = Array.from({ length: N }, () =>
    Array.from({ length: C }, () => Array.from({ length: S }, () => Math.fround(draw(random)))),
  );
  const target = Array.from({ length: N }, () =>
    Array.from({ length: S }, () => (random() < ignored ? IGNORE : Math.floor(random() * C))),
  );
  return { logits, target, weight };
}

describe('fused kernel, histogram select (pools of 65,536 pixels and more)', () => {
  test('continuous logits, ignored pixels and class weights: loss, k and the gradient of each selected pixel', () => {
    const weight = [0.5, 2, 1, 3];
    const c = randomCase(21, 2, 4, 40000, (random) => random() * 8 - 4, 0.1, weight);
    const p = 0.2;
    const got = runFused(c, p);
    const losses = pixelLosses(c.logits, c.target, { weight, ignoreIndex: IGNORE }).flat();
    const labels = c.target.flat();
    const valid = labels.map((y) => y !== IGNORE);
    const n = valid.filter(Boolean).length;
    const k = keepCount(p, n);
    expect(got.nValid).toBe(n);
    expect(got.k).toBe(k);
    expect(got.selected).toHaveLength(k);

    const { chosen, kth } = expectedSelection(losses, valid, k);
    const sum = chosen.reduce((acc, i) => acc + losses[i], 0);
    const denominator = chosen.reduce((acc, i) => acc + weight[labels[i]], 0);
    expect(Math.abs(got.loss - sum / denominator)).toBeLessThan(1e-5 * (sum / denominator));

    // Same set, except that float32 may order losses within rounding of the k-th differently.
    const expectedSet = new Set(chosen);
    const near = (i: number) => Math.abs(losses[i] - kth) < 1e-5 * kth;
    for (const i of got.selected) expect(expectedSet.has(i) || near(i)).toBe(true);

    // Each selected pixel's gradient column: (softmax - onehot) * w[y] / sum of selected weights.
    const probs = softmax(c.logits);
    let worst = 0;
    for (const i of got.selected) {
      const nIdx = Math.floor(i / got.S);
      const s = i % got.S;
      const y = labels[i];
      for (let cls = 0; cls < got.C; cls++) {
        const expected = ((probs[nIdx][s][cls] - (cls === y ? 1 : 0)) * weight[y]) / denominator;
        worst = Math.max(worst, Math.abs(got.grad[(nIdx * got.C + cls) * got.S + s] - expected));
      }
    }
    expect(worst).toBeLessThan(1e-6 / denominator);
  });

  test('the table-based exps: loss and gradient within float rounding of float64, ordinary and wide logits', () => {
    // 19 classes, so that every full 16-pixel block takes the AVX2 code where the CPU has it (the portable loops
    // are compared in a child process below). Logits in [-3, 3] make the sum of exps a sum of comparable terms, so
    // an exp error shows in the loss directly; logits in [-80, 80] send x - max across the whole range down to
    // the clamp at -87 and below. The gradient is held to what the reference path (PyTorch's operators) achieves.
    for (const [seed, spread] of [
      [41, 3],
      [42, 80],
    ] as const) {
      const c = randomCase(seed, 1, 19, 65536, (random) => (random() * 2 - 1) * spread, 0);
      const p = 0.25;
      const got = runFused(c, p);
      const losses = pixelLosses(c.logits, c.target).flat();
      const { chosen } = expectedSelection(
        losses,
        losses.map(() => true),
        got.k,
      );
      const mean = chosen.reduce((acc, i) => acc + losses[i], 0) / got.k;
      // Each pixel's float32 loss carries about half an ulp of rounding, and the mean of 16,384 of them less.
      expect(Math.abs(got.loss - mean)).toBeLessThan(2e-7 * mean);

      const probs = softmax(c.logits);
      const gradientError = (grad: Float32Array, selected: number[]) => {
        let worst = 0;
        for (const i of selected) {
          const y = c.target[0][i];
          for (let cls = 0; cls < got.C; cls++) {
            const expected = (probs[0][i][cls] - (cls === y ? 1 : 0)) / got.k;
            worst = Math.max(worst, Math.abs(grad[cls * got.S + i] - expected));
          }
        }
        return worst * got.k; // in units of 1/k: softmax values are at most 1
      };
      const { input, t } = tensors(c);
      const reference = bce.bootstrappedCrossEntropyWithStats(input, t, 0, p, {
        impl: 'reference',
        ignoreIndex: IGNORE,
      });
      reference.loss.backward();
      const referenceError = gradientError(input.grad!.toArray() as Float32Array, got.selected);
      const fusedError = gradientError(got.grad, got.selected);
      expect(fusedError).toBeLessThan(3 * 1.2e-7); // three ulps of 1
      expect(fusedError).toBeLessThanOrEqual(1.25 * referenceError);
    }
  });

  test('heavy ties at the k-th loss: exactly k pixels, ties taken in pixel order, the sum of the k largest', () => {
    // Every pixel copies one of 6 templates (a logit column and a label): 6 distinct losses, each shared,
    // bit for bit, by about 11,000 pixels. (Logits such as 0/1 would not do: (1, 0, 0) and (0, 0, 1) give the
    // same loss mathematically but sums of exps added in another order, one float32 ulp apart.)
    const random = mulberry32(22);
    const C = 3;
    const S = 70000;
    const templates = Array.from({ length: 6 }, () => ({
      column: Array.from({ length: C }, () => Math.fround(random() * 6 - 3)),
      label: Math.floor(random() * C),
    }));
    const pick = Array.from({ length: S }, () => (random() < 0.05 ? -1 : Math.floor(random() * templates.length)));
    const c: Case = {
      logits: [Array.from({ length: C }, (_, cls) => pick.map((t) => (t < 0 ? 0 : templates[t].column[cls])))],
      target: [pick.map((t) => (t < 0 ? IGNORE : templates[t].label))],
    };
    const losses = pixelLosses(c.logits, c.target, { ignoreIndex: IGNORE }).flat();
    const valid = c.target.flat().map((y) => y !== IGNORE);
    expect(new Set(losses.filter((_, i) => valid[i])).size).toBe(templates.length);
    for (const p of [0.15, 0.5, 0.93]) {
      const got = runFused(c, p);
      const k = keepCount(p, valid.filter(Boolean).length);
      expect(got.k).toBe(k);
      const { chosen } = expectedSelection(losses, valid, k);
      expect(got.selected).toEqual([...chosen].sort((a, b) => a - b));
      const mean = chosen.reduce((acc, i) => acc + losses[i], 0) / k;
      expect(Math.abs(got.loss - mean)).toBeLessThan(1e-6 * mean);
    }
  });

  test('every loss equal (all logits 0): k pixels from the first, loss log(C)', () => {
    const c = randomCase(23, 1, 5, 66000, () => 0, 0);
    const got = runFused(c, 0.3);
    const k = keepCount(0.3, 66000);
    expect(got.selected).toEqual(Array.from({ length: k }, (_, i) => i));
    expect(Math.abs(got.loss - Math.log(5))).toBeLessThan(1e-6);
  });

  test('a label outside [0, C) is a RangeError naming the count, as on the reference path', () => {
    const c = randomCase(24, 1, 3, 70000, (random) => random(), 0);
    c.target[0][12345] = 7;
    c.target[0][54321] = -1;
    const { input, t } = tensors(c);
    for (const impl of ['fused', 'reference'] as const) {
      let error: Error | undefined;
      try {
        bce.bootstrappedCrossEntropy(input, t, 0, 0.5, { impl, ignoreIndex: IGNORE });
      } catch (e) {
        error = e as Error;
      }
      // By name: the addon's errors come from Node's realm, not the test sandbox's.
      expect(error?.name).toBe('RangeError');
      expect(error?.message).toMatch(/target holds 2 class index\(es\) outside \[0, 3\)/);
    }
  });

  test('non-finite logits match the reference path (PyTorch), NaN gradient for an ignored NaN pixel included', () => {
    // 4096 pixels of 4 classes. Pixel 100 has a -inf logit in a class other than its label (finite loss); pixel
    // 200 is ignored with a NaN logit (no effect on the loss; a NaN gradient column, as PyTorch's 0 * NaN gives);
    // per variant, pixel 300 has a NaN logit or pixel 400 a +inf one (NaN loss, selected first, as in PyTorch).
    // In the last variant every logit is finite but two -inf ones below a finite maximum (pixel 200 made finite;
    // pixel 500 selected with a -inf logit): backward then skips its look for non-finite logits.
    const random = mulberry32(25);
    const C = 4;
    const S = 4096;
    const base = Array.from({ length: C }, () => Array.from({ length: S }, () => Math.fround(random() * 6 - 3)));
    const target = Array.from({ length: S }, () => Math.floor(random() * C));
    target[100] = 0;
    base[2][100] = -Infinity;
    target[200] = IGNORE;
    base[1][200] = NaN;
    target[500] = 0;
    const variants: Array<[string, (logits: number[][]) => void]> = [
      ['finite losses', () => undefined],
      [
        'NaN logit',
        (logits) => {
          logits[3][300] = NaN;
        },
      ],
      [
        '+inf logit',
        (logits) => {
          logits[0][400] = Infinity;
        },
      ],
      [
        '-inf below a finite maximum only',
        (logits) => {
          logits[1][200] = 0.5;
          [-3, 10, -3, -Infinity].forEach((x, c) => {
            logits[c][500] = x;
          });
        },
      ],
    ];
    for (const [, change] of variants) {
      const logits = base.map((row) => row.slice());
      change(logits);
      // Spatial (1, C, S), the vectorised path, and the same pixels as rows of an (S, C) input, the generic one.
      for (const layout of ['spatial', 'rows'] as const) {
        const results = (['fused', 'reference'] as const).map((impl) => {
          const data =
            layout === 'spatial'
              ? logits.flat()
              : Array.from({ length: S * C }, (_, i) => logits[i % C][Math.floor(i / C)]);
          const shape = layout === 'spatial' ? [1, C, S] : [S, C];
          const input = bce.tensor(data, { shape, dtype: 'float32', requiresGrad: true });
          const t = bce.tensor(target, { shape: layout === 'spatial' ? [1, S] : [S], dtype: 'int64' });
          const r = bce.bootstrappedCrossEntropyWithStats(input, t, 0, 0.5, { impl, ignoreIndex: IGNORE });
          expect(r.fused).toBe(impl === 'fused');
          r.loss.backward();
          return { loss: r.loss.item(), grad: Array.from(input.grad!.toArray() as Float32Array) };
        });
        const [fused, reference] = results;
        if (Number.isNaN(reference.loss)) {
          expect(fused.loss).toBeNaN();
        } else {
          expect(Math.abs(fused.loss - reference.loss)).toBeLessThan(1e-6 * Math.abs(reference.loss));
        }
        let mismatches = 0;
        for (let i = 0; i < fused.grad.length; i++) {
          const a = fused.grad[i];
          const b = reference.grad[i];
          const same = Number.isNaN(b) ? Number.isNaN(a) : Math.abs(a - b) <= 1e-6;
          if (!same) mismatches++;
        }
        expect(mismatches).toBe(0);
      }
    }
  });
});

describe('fused kernel, threads', () => {
  test('the loss and gradient do not depend on the thread count, bit for bit', () => {
    // Sums are formed per fixed block of pixels and ties taken in pixel order, whatever the threads.
    const before = bce.getNumThreads();
    const runs = [1, 2, 3].map((threads) => {
      bce.setNumThreads(threads);
      try {
        // The spatial, histogram-select and (N, C) cases: every pass, both layouts.
        return fusedCases()
          .slice(0, 4)
          .map((c) => runCase(c, 'fused'));
      } finally {
        bce.setNumThreads(before);
      }
    });
    for (const other of runs.slice(1)) {
      other.forEach((run, i) => {
        expect(Object.is(run.loss, runs[0][i].loss)).toBe(true);
        expect(run.k).toBe(runs[0][i].k);
        expect(run.grad.every((g, j) => Object.is(g, runs[0][i].grad[j]))).toBe(true);
      });
    }
  });
});

describe('fused kernel, portable loops against the AVX2 and AVX-512 code', () => {
  /** A run as the child sends it: the loss as a string (NaN survives), the gradient as base64 float32. */
  type EncodedRun = Omit<FusedRun, 'loss' | 'grad'> & { loss: string; grad: string };
  function decode(run: EncodedRun): FusedRun {
    const bytes = Buffer.from(run.grad, 'base64');
    const grad = Array.from(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4));
    return { ...run, loss: Number(run.loss), grad };
  }

  /** Loss: relative error. Gradient: worst difference relative to the largest finite |gradient|. NaN must match NaN. */
  function compare(a: FusedRun, b: FusedRun) {
    const differ = (x: number, y: number, scale: number) =>
      Number.isNaN(x) || Number.isNaN(y)
        ? Number.isNaN(x) && Number.isNaN(y)
          ? 0
          : Infinity
        : Math.abs(x - y) / scale;
    const lossError = differ(a.loss, b.loss, Math.max(Math.abs(b.loss), 1e-30));
    let scale = 1e-30;
    for (const g of b.grad) if (Number.isFinite(g)) scale = Math.max(scale, Math.abs(g));
    let gradError = 0;
    for (let i = 0; i < a.grad.length; i++) gradError = Math.max(gradError, differ(a.grad[i], b.grad[i], scale));
    return { lossError, gradError };
  }

  /** Every fused case run in a child process started with BOOTSTRAPPED_CE_CPU_KERNELS=kernels. */
  function runInChild(kernels: string) {
    const root = path.join(__dirname, '..');
    const child = spawnSync(
      process.execPath,
      [require.resolve('ts-node/dist/bin.js'), '--transpile-only', 'test/helpers/fused-child.ts'],
      {
        cwd: root,
        env: { ...process.env, BOOTSTRAPPED_CE_CPU_KERNELS: kernels },
        encoding: 'utf8',
        timeout: 120000,
        maxBuffer: 256 * 2 ** 20,
      },
    );
    const line = child.stdout.split('\n').find((l) => l.startsWith('FUSED '));
    if (line === undefined) throw new Error(`child failed: status ${child.status}\n${child.stderr.slice(-4000)}`);
    return JSON.parse(line.slice(6)) as {
      cpuKernels: string;
      results: Array<{ name: string; fused: EncodedRun; reference: EncodedRun }>;
      pixelLosses: string[];
    };
  }

  test('BOOTSTRAPPED_CE_CPU_KERNELS=baseline (a child process) matches this process and the reference path', () => {
    const report = runInChild('baseline');
    expect(report.cpuKernels).toBe('baseline');
    const cases = fusedCases();
    expect(report.results.map((r) => r.name)).toEqual(cases.map((c) => c.name));
    const rows: string[] = [];
    cases.forEach((c, i) => {
      const baseline = { fused: decode(report.results[i].fused), reference: decode(report.results[i].reference) };
      expect(baseline.fused.fused).toBe(true);
      const here = runCase(c, 'fused');
      const againstReference = compare(baseline.fused, baseline.reference);
      const againstHere = compare(baseline.fused, here);
      rows.push(
        `${c.name}: baseline vs reference loss ${againstReference.lossError.toExponential(1)} grad ${againstReference.gradError.toExponential(1)}; ` +
          `vs ${bce.info().cpuKernels} loss ${againstHere.lossError.toExponential(1)} grad ${againstHere.gradError.toExponential(1)}`,
      );
      expect(baseline.fused.k).toBe(baseline.reference.k);
      expect(baseline.fused.k).toBe(here.k);
      expect(againstReference.lossError).toBeLessThan(1e-6);
      expect(againstReference.gradError).toBeLessThan(2e-6);
      expect(againstHere.lossError).toBeLessThan(1e-6);
      expect(againstHere.gradError).toBeLessThan(2e-6);
    });
    // Pass 1's per-pixel losses: the portable loops' Cephes expf against the table-based exp, within float rounding.
    const baselineLosses = report.pixelLosses.map(Number);
    const hereLosses = perPixelLosses();
    let worst = 0;
    hereLosses.forEach(
      (l, i) => (worst = Math.max(worst, Math.abs(l - baselineLosses[i]) / Math.abs(baselineLosses[i]))),
    );
    rows.push(`per-pixel losses: baseline vs ${bce.info().cpuKernels} ${worst.toExponential(1)}`);
    expect(worst).toBeLessThan(1e-6);
    console.log(rows.join('\n'));
  });

  // The AVX-512 kernels do the AVX2 kernels' arithmetic 16 lanes at a time, in the same order per lane, so nothing
  // may differ, not even in the last bit. Only a CPU with AVX-512 runs both; elsewhere this process runs AVX2 (or
  // the portable loops) too, and the comparison would be of one code path with itself.
  const withAvx512 = bce.info().cpuKernels === 'avx512' ? test : test.skip;
  withAvx512('BOOTSTRAPPED_CE_CPU_KERNELS=avx2 (a child process) gives the AVX-512 results bit for bit', () => {
    const report = runInChild('avx2');
    expect(report.cpuKernels).toBe('avx2');
    const cases = fusedCases();
    expect(report.results.map((r) => r.name)).toEqual(cases.map((c) => c.name));
    cases.forEach((c, i) => {
      const avx2 = decode(report.results[i].fused);
      const here = runCase(c, 'fused');
      expect(avx2.fused).toBe(true);
      expect(here.k).toBe(avx2.k);
      expect(Object.is(here.loss, avx2.loss)).toBe(true);
      const differing = here.grad.filter((g, j) => !Object.is(g, avx2.grad[j])).length;
      expect(`${c.name}: ${differing} gradient values differ`).toBe(`${c.name}: 0 gradient values differ`);
    });
    // Pass 1's per-pixel losses, which the mean over many pixels would round away.
    const avx2Losses = report.pixelLosses.map(Number);
    const hereLosses = perPixelLosses();
    expect(hereLosses.filter((l, i) => !Object.is(l, avx2Losses[i])).length).toBe(0);
  });
});

describe('fused kernel, environment', () => {
  test('a BOOTSTRAPPED_CE_CPU_KERNELS value that is not a kernel name is reported at load, not silently ignored', () => {
    const load = (value: string) =>
      spawnSync(process.execPath, ['-r', 'ts-node/register/transpile-only', '-e', "require('./lib')"], {
        cwd: path.join(__dirname, '..'),
        env: { ...process.env, BOOTSTRAPPED_CE_CPU_KERNELS: value },
        encoding: 'utf8',
        timeout: 60000,
      });
    const misspelt = load('AVX2');
    expect(misspelt.status).toBe(0);
    expect(misspelt.stderr).toContain(
      "BOOTSTRAPPED_CE_CPU_KERNELS=\"AVX2\" is not one of 'avx512', 'avx2', 'baseline'",
    );
    const valid = load('avx2');
    expect(valid.status).toBe(0);
    expect(valid.stderr).not.toContain('BOOTSTRAPPED_CE_ENV');
  });
});
