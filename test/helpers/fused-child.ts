/**
 * Child process of test/fused.test.ts: runs every fused case with the fused kernel and the reference path, and the
 * per-pixel losses, and prints one JSON line, so that the parent can compare a process started with
 * BOOTSTRAPPED_CE_CPU_KERNELS=baseline or =avx2 with its own (AVX-512 or AVX2 where the CPU has them).
 */
import * as bce from '../../lib';
import { FusedRun, fusedCases, perPixelLosses, runCase } from './fused-cases';

// Gradients travel as base64 float32 (compact, and NaN survives; JSON would turn it into null).
const encode = (run: FusedRun) => ({
  ...run,
  loss: String(run.loss),
  grad: Buffer.from(Float32Array.from(run.grad).buffer).toString('base64'),
});
const results = fusedCases().map((c) => ({
  name: c.name,
  fused: encode(runCase(c, 'fused')),
  reference: encode(runCase(c, 'reference')),
}));
const pixelLosses = perPixelLosses().map(String);
process.stdout.write(`FUSED ${JSON.stringify({ cpuKernels: bce.info().cpuKernels, results, pixelLosses })}\n`);
