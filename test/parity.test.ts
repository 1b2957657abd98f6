/**
 * Live parity with PyTorch: the parity grid drawn from a fixed PRNG seed (test/parity/grid.ts) through the addon and through
 * test/parity/reference.py (one Python process for the whole grid), loss and input gradient compared per case.
 * The Python is the one whose torch is the addon's LibTorch version (test/helpers/torch-python.ts).
 * Skipped, with the reason printed, where no Python has it; test/parity-golden.test.ts still runs there.
 */
import { CLASS_COUNTS, PHASES, REDUCTIONS, WARMUP_KINDS, buildGrid, caseName } from './parity/grid';
import {
  CaseReport,
  DEFAULT_CASES,
  DEFAULT_SEED,
  ExpectedResult,
  compareCase,
  formatSummary,
  fusedStatus,
  runReference,
  skipReason,
  summarize,
} from './parity/harness';
import * as bce from '../lib';
import { findTorchPython, releaseOf } from './helpers/torch-python';

const DEVICE = 'cpu';
const grid = buildGrid({ seed: DEFAULT_SEED, cases: DEFAULT_CASES });
const fused = fusedStatus();
const runnable = grid.filter((c) => skipReason(c.spec, DEVICE, fused) === null);
const skipped = grid.filter((c) => skipReason(c.spec, DEVICE, fused) !== null);
const python = findTorchPython();

// Checks of the test inputs (the grid generator), not of the addon: the cases below cover what they claim.
describe('parity grid generator (test inputs, not the addon)', () => {
  const specs = grid.map((c) => c.spec);
  const has = (predicate: (s: (typeof specs)[number]) => boolean) => specs.some(predicate);

  it('has at least 300 configurations', () => {
    expect(specs.filter((s) => s.impl !== 'fused').length).toBeGreaterThanOrEqual(300);
  });

  it('covers every schedule kind in every phase, every reduction, C, dimension count and dtype', () => {
    for (const kind of WARMUP_KINDS) {
      const phases = kind === 'none' ? ['before'] : PHASES; // no warm-up has no phases
      for (const phase of phases)
        expect([kind, phase, has((s) => s.warmup.kind === kind && (kind === 'none' || s.phase === phase))]).toEqual([
          kind,
          phase,
          true,
        ]);
    }
    for (const reduction of REDUCTIONS)
      expect([reduction, has((s) => s.reduction === reduction)]).toEqual([reduction, true]);
    for (const classes of CLASS_COUNTS) expect([classes, has((s) => s.shape[1] === classes)]).toEqual([classes, true]);
    for (const dims of [2, 3, 4, 5]) expect([dims, has((s) => s.shape.length === dims)]).toEqual([dims, true]);
    for (const dtype of ['float32', 'float64']) expect(has((s) => s.dtype === dtype)).toBe(true);
  });

  it('covers the options: weights, ignored pixels 0% to 100%, smoothing, probability targets, perSample, binary, impls', () => {
    expect(has((s) => s.classWeights)).toBe(true);
    expect(has((s) => s.ignoreFraction === 0)).toBe(true);
    expect(has((s) => s.ignoreFraction === 1)).toBe(true);
    expect(has((s) => s.ignoreFirstSample && s.perSample)).toBe(true);
    expect(has((s) => s.labelSmoothing > 0 && s.classWeights)).toBe(true);
    expect(has((s) => s.target === 'prob' && s.loss === 'ce')).toBe(true);
    expect(has((s) => s.perSample)).toBe(true);
    expect(has((s) => s.loss === 'bce' && s.elementWeight !== 'none')).toBe(true);
    expect(has((s) => s.loss === 'bceLogits' && s.posWeight && s.elementWeight !== 'none')).toBe(true);
    expect(has((s) => s.p === 0.01) && has((s) => s.p === 1)).toBe(true);
    for (const impl of ['reference', 'auto', 'fused']) expect(has((s) => s.impl === impl)).toBe(true);
    expect(has((s) => s.impl === 'fused' && s.classWeights && s.reduction === 'mean')).toBe(true);
    for (const dtype of ['float32', 'float64'])
      expect(has((s) => s.dtype === dtype && s.perSample && s.reduction === 'mean' && s.ignoreFirstSample)).toBe(true);
  });
});

// CI sets PARITY_REQUIRE_LIVE=1 so that a missing PyTorch fails instead of skipping.
if (python.path === null && process.env.PARITY_REQUIRE_LIVE === '1') {
  it('finds a Python with PyTorch (PARITY_REQUIRE_LIVE=1)', () => {
    throw new Error(python.reason);
  });
} else if (python.path === null) {
  console.warn(
    `parity.test.ts: live PyTorch parity SKIPPED: ${python.reason}. test/parity-golden.test.ts still checks parity.`,
  );
}
const describeLive = python.path === null ? describe.skip : describe;
const liveTitle =
  python.path === null
    ? 'live parity with PyTorch (skipped: no Python with torch)'
    : `live parity with PyTorch ${python.torchVersion} (${python.path})`;

describeLive(liveTitle, () => {
  let expected = new Map<number, ExpectedResult>();
  let referenceTorch = '';
  const reports: CaseReport[] = [];

  beforeAll(() => {
    const started = Date.now();
    const run = runReference(python.path as string, runnable, DEVICE);
    expected = run.results;
    referenceTorch = run.torch;
    console.log(`parity: PyTorch ran ${runnable.length} cases in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  }, 600000);

  afterAll(() => {
    if (reports.length > 0)
      console.log(`parity: ${reports.length} cases on ${DEVICE}\n${formatSummary(summarize(reports))}`);
  });

  it('compares with the PyTorch of the LibTorch the addon was built against', () => {
    expect(releaseOf(referenceTorch)).toBe(releaseOf(bce.info().libtorchVersion));
  });

  it.each(runnable.map((c) => [caseName(c.spec), c] as const))('%s', (_name, c) => {
    const report = compareCase(c, DEVICE, expected.get(c.spec.id));
    reports.push(report);
    expect(report.failures).toEqual([]);
  });

  if (skipped.length > 0) {
    const reason = skipReason(skipped[0].spec, DEVICE, fused);
    console.warn(`parity.test.ts: ${skipped.length} impl 'fused' case(s) SKIPPED: ${reason}`);
    it.skip.each(skipped.map((c) => [reason, caseName(c.spec)] as const))('[%s] %s', () => undefined);
  }
});
