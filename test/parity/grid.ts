import { mulberry32 } from '../helpers/prng';
/**
 * The parity grid: seeded random loss configurations and their input data, generated in JavaScript only (no
 * LibTorch RNG), so that the jest suites, `npm run parity` and the golden-file generator see the same cases.
 * Everything here is plain JSON, which is also what test/parity/reference.py reads.
 */

export type LossKind = 'ce' | 'bce' | 'bceLogits';
export type FloatDType = 'float32' | 'float64';
export type TargetDType = 'int64' | 'int32' | 'uint8';
export type ImplSpec = 'reference' | 'auto' | 'fused';
/** 'fn:mean' is `s => s.mean()`, 'fn:sum2' is `s => s.sum().mul(2)` (function reductions). */
export type ReductionSpec = 'mean' | 'sum' | 'none' | 'fn:mean' | 'fn:sum2';
/** Where the iteration lies relative to the warm-up. */
export type Phase = 'before' | 'atStart' | 'inside' | 'atEnd' | 'after';

/**
 * Warm-up as data. 'custom' is the function `customWarmup` below (reference.py has its own copy): p = 1
 * before `start`, then halving every `halfLife` iterations down to p (powers of two: exact in both languages).
 */
export type WarmupSpec =
  | { kind: 'none' }
  | { kind: 'number'; warmup: number }
  | { kind: 'step'; warmup: number }
  | { kind: 'linear' | 'cosine'; start: number; end: number }
  | { kind: 'custom'; start: number; halfLife: number };

export interface CaseSpec {
  id: number;
  loss: LossKind;
  /** Input shape: (N, C, d1, ...); C is the class count for 'ce'. */
  shape: number[];
  dtype: FloatDType;
  p: number;
  iteration: number;
  warmup: WarmupSpec;
  phase: Phase;
  reduction: ReductionSpec;
  perSample: boolean;
  /** Multi-class only; the binary losses always run the reference path. */
  impl: ImplSpec;
  /** Multi-class: class-index or probability targets. */
  target: 'index' | 'prob';
  targetDtype: TargetDType;
  ignoreIndex: number;
  /** Fraction of index targets set to ignoreIndex (0..1); `ignoreFirstSample` ignores all of sample 0 too. */
  ignoreFraction: number;
  ignoreFirstSample: boolean;
  classWeights: boolean;
  labelSmoothing: number;
  /** Binary: per-element weight ('broadcast' has size 1 in every dimension but dim 1), posWeight, soft targets. */
  elementWeight: 'none' | 'full' | 'broadcast';
  posWeight: boolean;
  softTargets: boolean;
  /** Seed of this case's data. */
  dataSeed: number;
}

export interface TensorData {
  shape: number[];
  values: number[];
}

/** A case's inputs, explicit: what both sides build their tensors from. */
export interface CaseData {
  input: TensorData;
  target: TensorData;
  /** Class weights (ce) or per-element weights (binary). */
  weight?: TensorData;
  posWeight?: TensorData;
  /** Upstream gradient for reduction 'none' (shaped like the loss). */
  upstream?: TensorData;
}

export interface ParityCase {
  spec: CaseSpec;
  data: CaseData;
}

// ---------------------------------------------------------------------------------------------------------------
// Seeded random numbers (mulberry32): small, deterministic across platforms and Node versions.

export class Rng {
  private readonly draw: () => number;

  constructor(seed: number) {
    this.draw = mulberry32(seed);
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.draw();
  }

  uniform(low: number, high: number): number {
    return low + (high - low) * this.next();
  }

  /** Integer in [low, high]. */
  int(low: number, high: number): number {
    return low + Math.floor(this.next() * (high - low + 1));
  }

  pick<T>(values: readonly T[]): T {
    return values[Math.floor(this.next() * values.length)];
  }

  chance(probability: number): boolean {
    return this.next() < probability;
  }

  /** Standard normal (Box-Muller). */
  normal(): number {
    const u = 1 - this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.next());
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Schedules as functions of the spec (the addon receives these; reference.py recomputes p independently).

/** The 'custom' warm-up function: exact powers of two, so JavaScript and Python agree bit for bit. */
export function customWarmup(start: number, halfLife: number): (p: number, iteration: number) => number {
  return (p, iteration) => (iteration < start ? 1 : Math.max(p, 0.5 ** Math.floor((iteration - start) / halfLife)));
}

export const CLASS_COUNTS = [2, 3, 19, 150] as const;
export const WARMUP_KINDS: readonly WarmupSpec['kind'][] = ['none', 'number', 'step', 'linear', 'cosine', 'custom'];
export const PHASES: readonly Phase[] = ['before', 'atStart', 'inside', 'atEnd', 'after'];
export const REDUCTIONS: readonly ReductionSpec[] = ['mean', 'sum', 'none', 'fn:mean', 'fn:sum2'];

// ---------------------------------------------------------------------------------------------------------------
// The grid.

export interface GridOptions {
  seed: number;
  /** Number of base configurations; fused duplicates are added on top. */
  cases: number;
  /** Cap on input elements (N * C * pixels) per case; small for the golden file. */
  maxInputElements?: number;
}

/** Pixels (N * d1 * ...) allowed for C classes: keeps every case small enough for a fast suite. */
function pixelBudget(classes: number, maxInputElements: number): number {
  return Math.max(
    2,
    Math.min(classes >= 100 ? 96 : classes >= 10 ? 600 : 2400, Math.floor(maxInputElements / classes)),
  );
}

function drawShape(rng: Rng, classes: number, maxInputElements: number): number[] {
  const dims = rng.int(2, 5);
  const budget = pixelBudget(classes, maxInputElements);
  const n = rng.int(1, Math.min(4, budget));
  const spatial: number[] = [];
  let pixels = n;
  for (let d = 2; d < dims; d++) {
    const room = Math.floor(budget / pixels);
    // The per-dimension cap spreads pixels over all spatial dimensions.
    const size = room >= 1 ? rng.int(1, Math.max(1, Math.min(room, dims === 3 ? 64 : dims === 4 ? 16 : 8))) : 1;
    spatial.push(size);
    pixels *= size;
  }
  return [n, classes, ...spatial];
}

/** p from 0.01 to 1: the ends, the notes' float-error examples, and log-uniform values in between. */
function drawP(rng: Rng): number {
  if (rng.chance(0.3)) return rng.pick([0.01, 0.15, 0.29, 0.57, 1, 0.5, 0.25]);
  return Number(Math.exp(rng.uniform(Math.log(0.01), 0)).toFixed(4));
}

/** A warm-up of the given kind and an iteration in the given phase of it. */
function drawWarmup(rng: Rng, kind: WarmupSpec['kind'], phase: Phase): { warmup: WarmupSpec; iteration: number } {
  const start = rng.int(1, 500);
  const length = rng.chance(0.1) ? 0 : rng.int(2, 2000); // start == end: a step, no division
  const end = start + length;
  const iterationIn = (from: number, to: number) => {
    switch (phase) {
      case 'before':
        return rng.int(0, from - 1);
      case 'atStart':
        return from;
      case 'inside':
        return to > from + 1 ? rng.int(from + 1, to - 1) : from;
      case 'atEnd':
        return to;
      case 'after':
        return to + rng.int(1, 3000);
    }
  };
  switch (kind) {
    case 'none':
      return { warmup: { kind }, iteration: rng.int(0, 100000) };
    case 'number':
    case 'step':
      return { warmup: { kind, warmup: start }, iteration: iterationIn(start, start + rng.int(1, 10)) };
    case 'linear':
    case 'cosine':
      return { warmup: { kind, start, end }, iteration: iterationIn(start, end) };
    case 'custom': {
      const halfLife = rng.int(1, 200);
      return { warmup: { kind, start, halfLife }, iteration: iterationIn(start, start + 8 * halfLife) };
    }
  }
}

function drawIgnoreFraction(rng: Rng): number {
  return rng.pick([0, 0, 0, 0.05, 0.3, 0.7, 0.95, 1]);
}

/**
 * Some configurations are drawn inside the common ground of ours and the existing PyTorch implementations (STCN's
 * BootstrappedCE and the functional `bootstrapped_cross_entropy`; reference.py runs them there): class indices,
 * nothing ignored, no class weights, no smoothing, batch scope; STCN's BootstrappedCE also needs a linear schedule
 * and 'mean', the functional version p < 1 and no 'none'.
 */
function seedCompatible(rng: Rng, spec: CaseSpec): CaseSpec {
  const stcn = rng.chance(0.5);
  const { warmup, iteration } = drawWarmup(rng, stcn ? 'linear' : rng.pick(WARMUP_KINDS), spec.phase);
  return {
    ...spec,
    loss: 'ce',
    target: 'index',
    targetDtype: 'int64',
    warmup,
    iteration,
    p: stcn ? spec.p : Math.min(spec.p, 0.9),
    reduction: stcn ? 'mean' : rng.pick(['mean', 'sum', 'fn:mean', 'fn:sum2']),
    perSample: false,
    impl: rng.pick(['reference', 'auto']),
    ignoreFraction: 0,
    ignoreFirstSample: false,
    classWeights: false,
    labelSmoothing: 0,
    elementWeight: 'none',
    posWeight: false,
    softTargets: false,
  };
}

function drawSpec(rng: Rng, id: number, maxInputElements: number): CaseSpec {
  const loss: LossKind = rng.pick(['ce', 'ce', 'ce', 'ce', 'bce', 'bceLogits']);
  const classes = rng.pick(CLASS_COUNTS);
  const kind = rng.pick(WARMUP_KINDS);
  const phase = rng.pick(PHASES);
  const { warmup, iteration } = drawWarmup(rng, kind, phase);
  const isCE = loss === 'ce';
  const target = isCE && rng.chance(0.25) ? 'prob' : 'index';
  const hasIndexTargets = isCE && target === 'index';
  const targetDtype: TargetDType = hasIndexTargets ? rng.pick(['int64', 'int64', 'int64', 'int32', 'uint8']) : 'int64';
  const spec: CaseSpec = {
    id,
    loss,
    shape: drawShape(rng, classes, maxInputElements),
    dtype: rng.pick(['float32', 'float64']),
    p: drawP(rng),
    iteration,
    warmup,
    phase,
    reduction: rng.pick(REDUCTIONS),
    perSample: rng.chance(0.3),
    impl: isCE ? rng.pick(['reference', 'auto']) : 'reference',
    target,
    targetDtype,
    // uint8 label maps use 255 as void, as mmseg and PaddleSeg do.
    ignoreIndex: targetDtype === 'uint8' ? 255 : rng.pick([-100, -1, 255]),
    ignoreFraction: hasIndexTargets ? drawIgnoreFraction(rng) : 0,
    ignoreFirstSample: hasIndexTargets && rng.chance(0.2),
    classWeights: isCE && rng.chance(0.35),
    labelSmoothing: isCE && rng.chance(0.25) ? rng.pick([0.05, 0.1, 0.3]) : 0,
    elementWeight: isCE ? 'none' : rng.pick(['none', 'full', 'broadcast']),
    posWeight: loss === 'bceLogits' && rng.chance(0.5),
    softTargets: !isCE && rng.chance(0.4),
    dataSeed: Math.floor(rng.next() * 2 ** 31),
  };
  return rng.chance(0.15) ? seedCompatible(rng, spec) : spec;
}

/** Whether the fused CPU kernel covers this configuration (cpp/loss/fused/fused_ce_cpu.h, FusedApplies). */
export function fusedApplies(spec: CaseSpec): boolean {
  return (
    spec.loss === 'ce' &&
    spec.dtype === 'float32' &&
    spec.target === 'index' &&
    spec.targetDtype === 'int64' &&
    spec.labelSmoothing === 0 &&
    !spec.perSample &&
    (spec.reduction === 'mean' || spec.reduction === 'sum')
  );
}

/**
 * The grid: `cases` seeded configurations, plus an impl 'fused' copy of every configuration the fused kernel
 * covers (same data, so it is compared with the same PyTorch result).
 */
export function buildGrid(options: GridOptions): ParityCase[] {
  const rng = new Rng(options.seed);
  const maxInputElements = options.maxInputElements ?? 20000;
  const cases: ParityCase[] = [];
  for (let i = 0; i < options.cases; i++) {
    const spec = drawSpec(rng, cases.length, maxInputElements);
    const data = materialize(spec);
    cases.push({ spec, data });
    if (fusedApplies(spec)) cases.push({ spec: { ...spec, id: cases.length, impl: 'fused' }, data });
  }
  for (const explicit of EXPLICIT_CASES) {
    const spec = { ...explicit, id: cases.length };
    cases.push({ spec, data: materialize(spec) });
  }
  return cases;
}

/** A configuration written out: every field but the id, which follows the drawn cases. */
type ExplicitSpec = Omit<CaseSpec, 'id'>;

const EXPLICIT_BASE: ExplicitSpec = {
  loss: 'ce',
  shape: [2, 4, 30],
  dtype: 'float32',
  p: 0.3,
  iteration: 0,
  warmup: { kind: 'none' },
  phase: 'before',
  reduction: 'mean',
  perSample: false,
  impl: 'fused',
  target: 'index',
  targetDtype: 'int64',
  ignoreIndex: -100,
  ignoreFraction: 0,
  ignoreFirstSample: false,
  classWeights: true,
  labelSmoothing: 0,
  elementWeight: 'none',
  posWeight: false,
  softTargets: false,
  dataSeed: 0,
};

/**
 * Configurations the seeded draws above do not reach, appended after them so that the drawn cases (and the
 * golden file made from them) stay as they are: the fused kernel's weighted 'mean' (divided by the selected
 * class-weight sum), with and without ignored pixels and a warm-up; perSample 'mean' where some samples have no
 * valid pixel (averaged over the samples that have one), on both dtypes and both multi-class paths.
 */
export const EXPLICIT_CASES: readonly ExplicitSpec[] = [
  { ...EXPLICIT_BASE, dataSeed: 9101 },
  { ...EXPLICIT_BASE, p: 0.57, ignoreFraction: 0.3, ignoreIndex: 255, dataSeed: 9102 },
  { ...EXPLICIT_BASE, shape: [3, 19, 4, 5], p: 0.15, ignoreFraction: 0.05, ignoreFirstSample: true, dataSeed: 9103 },
  {
    ...EXPLICIT_BASE,
    shape: [1, 3, 40],
    warmup: { kind: 'linear', start: 5, end: 15 },
    phase: 'inside',
    iteration: 9,
    dataSeed: 9104,
  },
  {
    ...EXPLICIT_BASE,
    shape: [3, 3, 20],
    perSample: true,
    impl: 'reference',
    classWeights: false,
    ignoreFirstSample: true,
    dataSeed: 9105,
  },
  {
    ...EXPLICIT_BASE,
    shape: [4, 5, 3, 4],
    dtype: 'float64',
    p: 0.25,
    perSample: true,
    impl: 'auto',
    ignoreFirstSample: true,
    ignoreFraction: 0.3,
    ignoreIndex: 255,
    dataSeed: 9106,
  },
  {
    ...EXPLICIT_BASE,
    shape: [3, 19, 10],
    p: 0.4,
    perSample: true,
    impl: 'auto',
    ignoreFirstSample: true,
    labelSmoothing: 0.1,
    dataSeed: 9107,
  },
];

// ---------------------------------------------------------------------------------------------------------------
// Data: continuous random values, so that no two losses tie at the k-th place.

function product(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Values as the case's dtype holds them: float32 data is rounded here so both sides start from the same bits. */
function asDType(values: number[], dtype: FloatDType): number[] {
  return dtype === 'float32' ? values.map(Math.fround) : values;
}

function randomValues(rng: Rng, count: number, draw: () => number): number[] {
  return Array.from({ length: count }, draw);
}

/** The loss shape for reduction 'none': the target's shape for index targets, (N, d1, ...) for probability
 * targets (what F.cross_entropy(reduction='none') returns), the input's for the binary losses. */
export function lossShape(spec: CaseSpec): number[] {
  return spec.loss === 'ce' ? [spec.shape[0], ...spec.shape.slice(2)] : spec.shape;
}

function indexTargets(rng: Rng, spec: CaseSpec): number[] {
  const [n, classes] = spec.shape;
  const count = product(lossShape(spec));
  const perSample = count / n;
  return randomValues(rng, count, () => rng.int(0, classes - 1)).map((value, i) => {
    const ignored = rng.chance(spec.ignoreFraction) || (spec.ignoreFirstSample && i < perSample);
    return ignored ? spec.ignoreIndex : value;
  });
}

/** Softmax over dim 1 of random logits: probability targets. */
function probabilityTargets(rng: Rng, shape: number[]): number[] {
  const [n, classes] = shape;
  const inner = product(shape.slice(2));
  const values = randomValues(rng, product(shape), () => 1.5 * rng.normal());
  for (let s = 0; s < n; s++) {
    for (let j = 0; j < inner; j++) {
      const at = (c: number) => (s * classes + c) * inner + j;
      let total = 0;
      for (let c = 0; c < classes; c++) total += values[at(c)] = Math.exp(values[at(c)]);
      for (let c = 0; c < classes; c++) values[at(c)] /= total;
    }
  }
  return values;
}

/** The explicit inputs of a case, from its data seed. */
export function materialize(spec: CaseSpec): CaseData {
  const rng = new Rng(spec.dataSeed);
  const count = product(spec.shape);
  const scale = rng.uniform(0.5, 3);
  const data: CaseData = { input: { shape: spec.shape, values: [] }, target: { shape: [], values: [] } };
  if (spec.loss === 'ce') {
    data.input.values = asDType(
      randomValues(rng, count, () => scale * rng.normal()),
      spec.dtype,
    );
    data.target =
      spec.target === 'index'
        ? { shape: lossShape(spec), values: indexTargets(rng, spec) }
        : { shape: spec.shape, values: asDType(probabilityTargets(rng, spec.shape), spec.dtype) };
    if (spec.classWeights) {
      data.weight = {
        shape: [spec.shape[1]],
        values: asDType(
          randomValues(rng, spec.shape[1], () => rng.uniform(0.2, 2)),
          spec.dtype,
        ),
      };
    }
  } else {
    // Probabilities stay inside (0.02, 0.98) without clamping, which would create ties.
    const draw = spec.loss === 'bce' ? () => rng.uniform(0.02, 0.98) : () => scale * rng.normal();
    data.input.values = asDType(randomValues(rng, count, draw), spec.dtype);
    const target = spec.softTargets ? () => rng.next() : () => (rng.chance(0.5) ? 1 : 0);
    data.target = { shape: spec.shape, values: asDType(randomValues(rng, count, target), spec.dtype) };
    if (spec.elementWeight !== 'none') {
      const shape = spec.elementWeight === 'full' ? spec.shape : spec.shape.map((size, d) => (d === 1 ? size : 1));
      data.weight = {
        shape,
        values: asDType(
          randomValues(rng, product(shape), () => rng.uniform(0.2, 2)),
          spec.dtype,
        ),
      };
    }
    if (spec.posWeight) {
      // PyTorch's usual pos_weight: one value per entry of the last dimension, broadcast over the rest.
      const shape = [spec.shape[spec.shape.length - 1]];
      data.posWeight = {
        shape,
        values: asDType(
          randomValues(rng, shape[0], () => rng.uniform(0.5, 3)),
          spec.dtype,
        ),
      };
    }
  }
  if (spec.reduction === 'none') {
    const shape = lossShape(spec);
    data.upstream = {
      shape,
      values: asDType(
        randomValues(rng, product(shape), () => rng.uniform(0.5, 1.5)),
        spec.dtype,
      ),
    };
  }
  return data;
}

// ---------------------------------------------------------------------------------------------------------------

function describeWarmup(w: WarmupSpec): string {
  switch (w.kind) {
    case 'none':
      return 'none';
    case 'number':
      return `warmup=${w.warmup}`;
    case 'step':
      return `step(${w.warmup})`;
    case 'linear':
    case 'cosine':
      return `${w.kind}(${w.start},${w.end})`;
    case 'custom':
      return `custom(${w.start},${w.halfLife})`;
  }
}

/** A one-line description of a case, used as the test name and in failure reports. */
export function caseName(spec: CaseSpec): string {
  const parts = [
    `#${spec.id}`,
    spec.loss === 'ce' ? `ce/${spec.target}${spec.target === 'index' ? `:${spec.targetDtype}` : ''}` : spec.loss,
    spec.dtype,
    `[${spec.shape}]`,
    `p=${spec.p}`,
    spec.warmup.kind === 'none'
      ? `no-warmup(it=${spec.iteration})`
      : `${describeWarmup(spec.warmup)}@${spec.phase}(it=${spec.iteration})`,
    spec.reduction,
  ];
  if (spec.perSample) parts.push('perSample');
  if (spec.classWeights) parts.push('classWeights');
  if (spec.ignoreFraction > 0 || spec.ignoreFirstSample) {
    parts.push(`ignore=${spec.ignoreFraction}${spec.ignoreFirstSample ? '+sample0' : ''}(${spec.ignoreIndex})`);
  }
  if (spec.labelSmoothing > 0) parts.push(`ls=${spec.labelSmoothing}`);
  if (spec.elementWeight !== 'none') parts.push(`weight=${spec.elementWeight}`);
  if (spec.posWeight) parts.push('posWeight');
  if (spec.softTargets) parts.push('softTargets');
  if (spec.loss === 'ce') parts.push(`impl=${spec.impl}`);
  return parts.join(' ');
}
