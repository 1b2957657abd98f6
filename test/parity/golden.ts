/** The golden file: a seeded subset of the parity grid with PyTorch's results, checked without Python. */
import * as path from 'path';
import { ParityCase } from './grid';
import { ExpectedResult } from './harness';

export const GOLDEN_PATH = path.join(__dirname, '..', 'fixtures', 'parity-golden.json');

/** Small shapes keep the file well under 1 MB with the inputs stored explicitly. */
export const GOLDEN_GRID = { seed: 4242, cases: 80, maxInputElements: 240 } as const;

export interface GoldenCase extends ParityCase {
  /** PyTorch's loss in full, the gradient as checksums. */
  expected: Omit<ExpectedResult, 'grad' | 'existingImpls'>;
}

export interface GoldenFile {
  about: string;
  torch: string;
  grid: typeof GOLDEN_GRID;
  cases: GoldenCase[];
}
