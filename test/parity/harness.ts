/**
 * What the parity jest suites and `npm run parity` share: running the whole grid
 * through test/parity/reference.py in one process, running a case on the addon, and comparing the two.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import {
  Tensor,
  bootstrappedBinaryCrossEntropyWithLogitsStats,
  bootstrappedBinaryCrossEntropyWithStats,
  bootstrappedCrossEntropyWithStats,
  schedules,
  tensor,
  tidy,
} from '../../lib';
import type { BootstrappedResult, DType, Reduction, Warmup } from '../../lib';
import { CaseData, CaseSpec, ParityCase, TensorData, WarmupSpec, caseName, customWarmup } from './grid';

export const REFERENCE_SCRIPT = path.join(__dirname, 'reference.py');

/** Relative tolerance on the largest error over elements. */
export const TOLERANCE: Record<CaseSpec['dtype'], number> = { float64: 1e-10, float32: 1e-5 };

/** Below this relative gap between the k-th and (k+1)-th loss, rounding alone may swap them (a few ulps). */
export const TIE_GAP: Record<CaseSpec['dtype'], number> = { float64: 1e-13, float32: 1e-5 };

/** Default grid of the live suite and of `npm run parity`. */
export const DEFAULT_SEED = 20240604;
export const DEFAULT_CASES = 320;

/** What reference.py returns for one case. */
export interface ExpectedResult {
  id: number;
  loss: number[];
  /** The input gradient (live runs), or its checksums only (golden file). */
  grad?: number[];
  gradChecksums?: GradChecksums;
  p: number;
  k: number;
  nValid: number;
  /** Gap between the k-th and (k+1)-th loss relative to the largest; null when every valid element is kept. */
  tieGap: number | null;
  /**
   * The existing PyTorch implementations, where they agree with the documented semantics: STCN's BootstrappedCE
   * (`stcn`) and the functional `bootstrapped_cross_entropy` (`functional`).
   */
  existingImpls?: { stcn?: { loss: number[]; grad: number[] }; functional?: { loss: number[]; grad: number[] } };
}

export interface ReferenceRun {
  torch: string;
  device: string;
  results: Map<number, ExpectedResult>;
}

/** Runs every case through reference.py in one Python process. */
export function runReference(python: string, cases: ParityCase[], device: string): ReferenceRun {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bce-parity-'));
  try {
    const batch = path.join(dir, 'batch.json');
    const out = path.join(dir, 'result.json');
    // LibTorch and PyTorch name devices alike ('cpu', 'cuda', 'cuda:N').
    fs.writeFileSync(batch, JSON.stringify({ device, cases }));
    const run = spawnSync(python, [REFERENCE_SCRIPT, batch, out], { encoding: 'utf8', timeout: 20 * 60 * 1000 });
    if (run.status !== 0) {
      throw new Error(`reference.py failed (${run.error?.message ?? `exit ${run.status}`}):\n${run.stderr}`);
    }
    const parsed = JSON.parse(fs.readFileSync(out, 'utf8')) as {
      torch: string;
      device: string;
      results: ExpectedResult[];
    };
    return { torch: parsed.torch, device: parsed.device, results: new Map(parsed.results.map((r) => [r.id, r])) };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The addon side

export function warmupOf(spec: WarmupSpec): Warmup | undefined {
  switch (spec.kind) {
    case 'none':
      return undefined;
    case 'number':
      return spec.warmup;
    case 'step':
      return schedules.step(spec.warmup);
    case 'linear':
      return schedules.linear(spec.start, spec.end);
    case 'cosine':
      return schedules.cosine(spec.start, spec.end);
    case 'custom':
      return customWarmup(spec.start, spec.halfLife);
  }
}

export function reductionOf(spec: CaseSpec['reduction']): Reduction {
  switch (spec) {
    case 'fn:mean':
      return (s) => s.mean();
    case 'fn:sum2':
      return (s) => s.sum().mul(2);
    default:
      return spec;
  }
}

export interface AddonResult {
  loss: number[];
  grad: number[];
  /** Whether `input.grad` was null after backward (compared as zeros). */
  gradMissing: boolean;
  p: number;
  k: number;
  nValid: number;
  fused: boolean;
}

function build(data: TensorData, dtype: DType, device: string, requiresGrad = false): Tensor {
  // Float data travels as float64 (float32 cases hold float32-representable values); indices as int32.
  const values =
    dtype === 'float32' || dtype === 'float64' ? Float64Array.from(data.values) : Int32Array.from(data.values);
  return tensor(values, { shape: data.shape, dtype, device, requiresGrad });
}

function callLoss(spec: CaseSpec, data: CaseData, input: Tensor, device: string): BootstrappedResult {
  const optional = (t: TensorData | undefined) => (t === undefined ? undefined : build(t, spec.dtype, device));
  const common = { warmup: warmupOf(spec.warmup), reduction: reductionOf(spec.reduction), perSample: spec.perSample };
  if (spec.loss === 'ce') {
    const targetDtype = spec.target === 'prob' ? spec.dtype : spec.targetDtype;
    return bootstrappedCrossEntropyWithStats(input, build(data.target, targetDtype, device), spec.iteration, spec.p, {
      ...common,
      weight: optional(data.weight),
      ignoreIndex: spec.ignoreIndex,
      labelSmoothing: spec.labelSmoothing,
      impl: spec.impl,
    });
  }
  const target = build(data.target, spec.dtype, device);
  if (spec.loss === 'bce') {
    return bootstrappedBinaryCrossEntropyWithStats(input, target, spec.iteration, spec.p, {
      ...common,
      weight: optional(data.weight),
    });
  }
  return bootstrappedBinaryCrossEntropyWithLogitsStats(input, target, spec.iteration, spec.p, {
    ...common,
    weight: optional(data.weight),
    posWeight: optional(data.posWeight),
  });
}

/** Runs one case on the addon: the loss, then backward (with the case's upstream gradient for 'none'). */
export function runAddon(c: ParityCase, device: string): AddonResult {
  return tidy(() => {
    const input = build(c.data.input, c.spec.dtype, device, true);
    const result = callLoss(c.spec, c.data, input, device);
    if (c.data.upstream) result.loss.backward(build(c.data.upstream, c.spec.dtype, device));
    else result.loss.backward();
    const grad = input.grad;
    return {
      loss: Array.from(result.loss.detach().toArray() as Float64Array),
      grad:
        grad === null
          ? new Array<number>(c.data.input.values.length).fill(0)
          : Array.from(grad.toArray() as Float64Array),
      gradMissing: grad === null,
      p: result.p,
      k: result.k,
      nValid: result.nValid,
      fused: result.fused,
    };
  });
}

/** Whether impl 'fused' runs the fused kernel in this build; `reason` says why not. */
export function fusedStatus(): { available: boolean; reason: string } {
  // A small configuration the kernel covers: float32 CPU logits, int64 targets, batch scope, 'mean'.
  const spec = { dtype: 'float32', shape: [2, 3, 4] } as const;
  try {
    const result = tidy(() => {
      const input = tensor(
        Float64Array.from({ length: 24 }, (_, i) => Math.sin(i * 1.7)),
        { shape: [...spec.shape], dtype: spec.dtype },
      );
      const target = tensor(
        Int32Array.from({ length: 8 }, (_, i) => i % 3),
        { shape: [2, 4], dtype: 'int64' },
      );
      const r = bootstrappedCrossEntropyWithStats(input, target, 0, 0.5, { impl: 'fused' });
      return { fused: r.fused };
    });
    return result.fused
      ? { available: true, reason: '' }
      : { available: false, reason: "fused kernel not built (impl 'fused' ran the reference path)" };
  } catch (error) {
    const message = (error as Error).message;
    if (/does not apply|not built|not available|not implemented/i.test(message)) {
      return { available: false, reason: `fused kernel not built (${message})` };
    }
    // Any other error is the kernel's: keep the cases so that they fail and show it.
    return { available: true, reason: '' };
  }
}

/** Why a case cannot run here (null when it can): fused cases need the kernel, and the kernel is CPU only. */
export function skipReason(
  spec: CaseSpec,
  device: string,
  fused: { available: boolean; reason: string },
): string | null {
  if (spec.impl !== 'fused') return null;
  if (!device.startsWith('cpu')) return 'the fused kernel is CPU only';
  return fused.available ? null : fused.reason;
}

// ---------------------------------------------------------------------------------------------------------------
// Comparison

/** max|a - b| / max(max|b|, tiny): the largest error over elements, relative to the reference's scale. */
export function relativeError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) return Infinity;
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i] - expected[i]);
    diff = Number.isNaN(d) ? Infinity : Math.max(diff, d);
    scale = Math.max(scale, Math.abs(expected[i]));
  }
  return diff / Math.max(scale, 1e-30);
}

export interface CaseReport {
  spec: CaseSpec;
  name: string;
  device: string;
  lossError: number;
  /** null when the gradient was not compared (selection ambiguous at the k-th place). */
  gradError: number | null;
  /** Worst error against the existing implementations that apply (`ExpectedResult.existingImpls`), by name. */
  existingImplErrors: Record<string, { loss: number; grad: number }>;
  failures: string[];
}

/**
 * Compares the addon's result with PyTorch's: loss, gradient, p, k, the pool size; and with the existing
 * implementations.
 */
export function compareCase(c: ParityCase, device: string, expected: ExpectedResult | undefined): CaseReport {
  const report: CaseReport = {
    spec: c.spec,
    name: caseName(c.spec),
    device,
    lossError: NaN,
    gradError: null,
    existingImplErrors: {},
    failures: [],
  };
  if (!expected) {
    report.failures.push('no PyTorch result for this case');
    return report;
  }
  let actual: AddonResult;
  try {
    actual = runAddon(c, device);
  } catch (error) {
    report.failures.push(`addon threw: ${(error as Error).message}`);
    return report;
  }
  const tolerance = TOLERANCE[c.spec.dtype];
  // Near-ties at the k-th place may select a different element on either side: same loss, other gradient.
  const compareGrad = expected.tieGap === null || expected.tieGap > TIE_GAP[c.spec.dtype];
  report.lossError = relativeError(actual.loss, expected.loss);
  report.gradError = !compareGrad
    ? null
    : expected.grad !== undefined
      ? relativeError(actual.grad, expected.grad)
      : checksumError(actual.grad, expected.gradChecksums as GradChecksums);
  if (!(report.lossError <= tolerance)) {
    report.failures.push(
      `loss: relative error ${report.lossError.toExponential(2)} > ${tolerance} (got ${preview(actual.loss)}, expected ${preview(expected.loss)})`,
    );
  }
  if (report.gradError !== null && !(report.gradError <= tolerance)) {
    report.failures.push(`grad: relative error ${report.gradError.toExponential(2)} > ${tolerance}`);
  }
  if (actual.k !== expected.k || actual.nValid !== expected.nValid) {
    report.failures.push(`k/nValid: got ${actual.k}/${actual.nValid}, expected ${expected.k}/${expected.nValid}`);
  }
  if (!(Math.abs(actual.p - expected.p) <= 1e-12 * Math.max(1, expected.p))) {
    report.failures.push(`p: got ${actual.p}, expected ${expected.p}`);
  }
  if (c.spec.impl === 'fused' && !actual.fused) report.failures.push("impl 'fused' did not run the fused kernel");
  for (const [name, result] of Object.entries(expected.existingImpls ?? {})) {
    if (!result) continue;
    const errors = {
      loss: relativeError(actual.loss, result.loss),
      grad: compareGrad ? relativeError(actual.grad, result.grad) : 0,
    };
    report.existingImplErrors[name] = errors;
    if (!(errors.loss <= tolerance && errors.grad <= tolerance)) {
      report.failures.push(
        `${name} implementation: loss error ${errors.loss.toExponential(2)}, grad error ${errors.grad.toExponential(2)}`,
      );
    }
  }
  return report;
}

/** A compact fingerprint of a gradient, for the golden file: sums, a weighted sum and a few entries. */
export interface GradChecksums {
  length: number;
  sum: number;
  sumAbs: number;
  sumSquares: number;
  /** sum of g[i] * r(i) for a fixed pseudo-random r in [-0.5, 0.5): catches misplaced entries that sums miss. */
  weightedSum: number;
  maxAbs: number;
  /** [index, value] pairs: evenly spread entries and the largest one. */
  samples: [number, number][];
}

function checksumWeight(i: number): number {
  return ((i * 7919) % 1009) / 1009 - 0.5;
}

export function gradChecksums(grad: number[]): GradChecksums {
  const n = grad.length;
  let sum = 0,
    sumAbs = 0,
    sumSquares = 0,
    weightedSum = 0,
    maxAbs = 0,
    argMax = 0;
  grad.forEach((g, i) => {
    sum += g;
    sumAbs += Math.abs(g);
    sumSquares += g * g;
    weightedSum += g * checksumWeight(i);
    if (Math.abs(g) > maxAbs) [maxAbs, argMax] = [Math.abs(g), i];
  });
  const indices =
    n === 0 ? [] : [...new Set([0, 1, 2, 3, 4, 5].map((j) => Math.floor((j * (n - 1)) / 5)).concat(argMax))];
  return { length: n, sum, sumAbs, sumSquares, weightedSum, maxAbs, samples: indices.map((i) => [i, grad[i]]) };
}

/** The largest relative error over the checksums, each relative to its natural scale. */
export function checksumError(grad: number[], expected: GradChecksums): number {
  const actual = gradChecksums(grad);
  if (actual.length !== expected.length) return Infinity;
  const tiny = 1e-30;
  const linear = Math.max(expected.sumAbs, tiny);
  const errors = [
    Math.abs(actual.sum - expected.sum) / linear,
    Math.abs(actual.sumAbs - expected.sumAbs) / linear,
    Math.abs(actual.weightedSum - expected.weightedSum) / linear,
    Math.abs(actual.sumSquares - expected.sumSquares) / Math.max(expected.sumSquares, tiny),
    ...expected.samples.map(([i, value]) => Math.abs(grad[i] - value) / Math.max(expected.maxAbs, tiny)),
  ];
  return errors.some(Number.isNaN) ? Infinity : Math.max(...errors);
}

function preview(values: number[]): string {
  return values.length === 1
    ? String(values[0])
    : `[${values.slice(0, 4).join(', ')}${values.length > 4 ? ', ...' : ''}] (${values.length})`;
}

// ---------------------------------------------------------------------------------------------------------------
// Summary

export interface SummaryRow {
  group: string;
  cases: number;
  failed: number;
  worstLoss: number;
  worstGrad: number;
  gradSkipped: number;
}

/** Worst errors per dtype, device and impl (and per existing implementation). */
export function summarize(reports: CaseReport[]): SummaryRow[] {
  const rows = new Map<string, SummaryRow>();
  const add = (group: string, report: CaseReport, loss: number, grad: number | null) => {
    const row = rows.get(group) ?? { group, cases: 0, failed: 0, worstLoss: 0, worstGrad: 0, gradSkipped: 0 };
    row.cases += 1;
    row.failed += report.failures.length > 0 ? 1 : 0;
    row.worstLoss = worst(row.worstLoss, loss);
    if (grad === null) row.gradSkipped += 1;
    else row.worstGrad = worst(row.worstGrad, grad);
    rows.set(group, row);
  };
  for (const r of reports) {
    const impl = r.spec.loss === 'ce' ? r.spec.impl : `${r.spec.loss} (reference)`;
    add(`${r.spec.dtype} ${r.device}`, r, r.lossError, r.gradError);
    add(`${r.spec.dtype} ${r.device} impl=${impl}`, r, r.lossError, r.gradError);
    for (const [name, e] of Object.entries(r.existingImplErrors))
      add(`${r.spec.dtype} ${r.device} vs ${name}`, r, e.loss, e.grad);
  }
  return [...rows.values()].sort((a, b) => a.group.localeCompare(b.group));
}

function worst(current: number, value: number): number {
  return Number.isNaN(value) || value > current ? (Number.isNaN(value) ? Infinity : value) : current;
}

export function formatSummary(rows: SummaryRow[]): string {
  const header = `${'group'.padEnd(44)} ${'cases'.padStart(5)} ${'failed'.padStart(6)} ${'worst loss err'.padStart(14)} ${'worst grad err'.padStart(14)}`;
  const lines = rows.map(
    (r) =>
      `${r.group.padEnd(44)} ${String(r.cases).padStart(5)} ${String(r.failed).padStart(6)} ` +
      `${r.worstLoss.toExponential(2).padStart(14)} ${r.worstGrad.toExponential(2).padStart(14)}` +
      (r.gradSkipped ? `  (grad not compared in ${r.gradSkipped}: near-tie at k)` : ''),
  );
  return [header, ...lines].join('\n');
}
