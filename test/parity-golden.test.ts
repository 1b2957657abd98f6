/**
 * Parity without Python: the addon against PyTorch's results stored in test/fixtures/parity-golden.json
 * (regenerate with `npm run parity:golden`). Inputs are explicit in the file; gradients are compared by checksum.
 */
import * as fs from 'fs';
import { caseName } from './parity/grid';
import { GOLDEN_PATH, GoldenFile } from './parity/golden';
import { CaseReport, compareCase, formatSummary, fusedStatus, skipReason, summarize } from './parity/harness';

const DEVICE = 'cpu';
const golden = JSON.parse(fs.readFileSync(GOLDEN_PATH, 'utf8')) as GoldenFile;
const fused = fusedStatus();
const runnable = golden.cases.filter((c) => skipReason(c.spec, DEVICE, fused) === null);
const skipped = golden.cases.filter((c) => skipReason(c.spec, DEVICE, fused) !== null);

describe(`parity with PyTorch ${golden.torch} (golden file, ${golden.cases.length} cases)`, () => {
  const reports: CaseReport[] = [];

  afterAll(() => {
    if (reports.length > 0) console.log(`parity-golden: ${reports.length} cases\n${formatSummary(summarize(reports))}`);
  });

  it('stores inputs and results for a subset of the grid', () => {
    expect(golden.cases.length).toBeGreaterThanOrEqual(60);
    for (const c of golden.cases) expect(c.data.input.values.length).toBe(c.spec.shape.reduce((a, b) => a * b, 1));
  });

  it.each(runnable.map((c) => [caseName(c.spec), c] as const))('%s', (_name, c) => {
    const report = compareCase(c, DEVICE, { ...c.expected, id: c.spec.id });
    reports.push(report);
    expect(report.failures).toEqual([]);
  });

  if (skipped.length > 0) {
    const reason = skipReason(skipped[0].spec, DEVICE, fused);
    console.warn(`parity-golden.test.ts: ${skipped.length} impl 'fused' case(s) SKIPPED: ${reason}`);
    it.skip.each(skipped.map((c) => [reason, caseName(c.spec)] as const))('[%s] %s', () => undefined);
  }
});
