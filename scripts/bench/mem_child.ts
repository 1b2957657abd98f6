/**
 * Peak memory of one addon call in a fresh process (started by main.ts, one per workload and implementation).
 * Argument: a JSON object {shape, seed, device, p, mode, impl, threads}. Prints one line "BENCH_RESULT <json>".
 */
import * as bce from '../../lib';
import { makeData, measurePeak, AddonImpl, Mode } from './addon';

interface Job {
  shape: number[];
  seed: number;
  device: string;
  p: number;
  mode: Mode;
  impl: AddonImpl;
  threads: number;
}

const job = JSON.parse(process.argv[2]) as Job;
try {
  bce.setNumThreads(job.threads);
  const data = makeData(job.shape, job.seed, job.device);
  const result = measurePeak(data, job.p, job.mode, job.impl);
  process.stdout.write(`BENCH_RESULT ${JSON.stringify({ ok: true, ...result })}\n`);
} catch (error) {
  process.stdout.write(
    `BENCH_RESULT ${JSON.stringify({ ok: false, error: String((error as Error)?.message ?? error) })}\n`,
  );
}
