/**
 * The benchmark's peak-memory probes: one fresh process per (pass, p) and implementation (mem_child.ts for the
 * addon, a fresh torch_bench.py for PyTorch), so that each peak is the call's own and not the harness's.
 */
import { spawnSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { PythonWorker } from '../../test/helpers/torch-worker';
import { Mode } from './addon';
import { fmtMB, log } from './format';
import { IMPLS, ImplName, Pinning, Workload, pinProcesses } from './measure';
import { REPO_ROOT } from './options';

/** What a fresh process reports of its call (mem_child.ts in camelCase, torch_bench.py in snake_case). */
interface MemResult {
  peakBytes?: number | null;
  peak_bytes?: number;
  method?: string;
  firstMs?: number;
  first_ms?: number;
  fused?: boolean;
  error?: string;
}

/**
 * The addon binary this process loaded, copied to a private file that the fresh processes of the memory
 * measurement load (BOOTSTRAPPED_CE_BINARY), so that they run the same code even if the working tree's build or
 * prebuild changes meanwhile.
 */
let pinnedBinary: string | undefined;

/** Copies `binary` for the fresh processes (above); returns its identity for the report. */
export function pinBinary(binary: string): { sha256?: string; bytes?: number; modified?: string } {
  try {
    const bytes = fs.readFileSync(binary);
    const stat = fs.statSync(binary);
    pinnedBinary = path.join(os.tmpdir(), `bootstrapped-ce-bench-${process.pid}.node`);
    fs.writeFileSync(pinnedBinary, bytes);
    process.on('exit', () => fs.rmSync(pinnedBinary!, { force: true }));
    return {
      sha256: crypto.createHash('sha256').update(bytes).digest('hex').slice(0, 16),
      bytes: bytes.length,
      modified: stat.mtime.toISOString(),
    };
  } catch {
    return {};
  }
}

/** Peak memory of the addon in a fresh Node process (mem_child.ts). */
function addonPeak(job: Record<string, unknown>): MemResult {
  const env = pinnedBinary ? { ...process.env, BOOTSTRAPPED_CE_BINARY: pinnedBinary } : process.env;
  const r = spawnSync(
    process.execPath,
    ['--expose-gc', '-r', 'ts-node/register/transpile-only', path.join(__dirname, 'mem_child.ts'), JSON.stringify(job)],
    { cwd: REPO_ROOT, encoding: 'utf8', maxBuffer: 16 << 20, timeout: 600_000, env },
  );
  const line = (r.stdout || '').split('\n').find((l) => l.startsWith('BENCH_RESULT '));
  if (!line)
    return {
      error: `mem_child failed (status ${r.status}): ${(r.stderr || '').trim().split('\n').slice(-3).join(' | ')}`,
    };
  const parsed = JSON.parse(line.slice('BENCH_RESULT '.length));
  if (parsed.ok && job.impl === 'fused' && !parsed.fused)
    return { error: 'the fresh process did not run the fused kernel' };
  return parsed.ok ? parsed : { error: parsed.error };
}

/** Peak memory of PyTorch in a fresh Python process. */
async function torchPeak(
  python: string,
  job: { shape: number[]; seed: number; device: string; p: number; mode: Mode; threads: number },
): Promise<MemResult> {
  const worker = new PythonWorker(python);
  try {
    await worker.request({ cmd: 'data', shape: job.shape, seed: job.seed, device: job.device });
    return await worker.request<MemResult>({ cmd: 'mem', p: job.p, mode: job.mode, threads: job.threads });
  } catch (error) {
    return { error: String((error as Error).message) };
  } finally {
    await worker.close();
  }
}

/** The peak-memory probes of one size. */
export interface MemoryProbeSpec {
  shape: number[];
  seed: number;
  device: string;
  modes: Mode[];
  pList: number[];
  threadList: number[];
  /** The timed workloads of this size, which receive the peaks. */
  workloads: Workload[];
  /** The Python of the timing worker (a fresh one is started per probe), when there is one. */
  python?: string;
  worker?: PythonWorker;
}

/**
 * Measures the peak extra memory of one call at every (pass, p) of a size, for each implementation, at the largest
 * thread count of the run, and writes it into the workloads. Returns the pinning now in effect.
 */
export async function probePeakMemory(
  spec: MemoryProbeSpec,
  pinningBefore: Pinning | undefined,
): Promise<Pinning | undefined> {
  const { shape, seed, device, python, worker } = spec;
  let pinning = pinningBefore;
  const size = shape.join('x');
  const memThreads = Math.max(...spec.threadList);
  // Fresh processes inherit this one's CPU mask: give them every CPU, as outside the benchmark.
  if (pinning?.pinned && worker?.alive) pinning = await pinProcesses(worker, undefined, pinning);
  for (const m of spec.modes) {
    for (const p of spec.pList) {
      const rows = spec.workloads.filter((w) => w.size === size && w.mode === m && w.p === p);
      const job = { shape, seed, device, p, mode: m, threads: memThreads };
      const results: Partial<Record<ImplName, MemResult>> = {};
      results.reference = addonPeak({ ...job, impl: 'reference' });
      if (rows.some((w) => w.impls.fused.available)) results.fused = addonPeak({ ...job, impl: 'fused' });
      if (python && rows.some((w) => w.impls.torch.available)) results.torch = await torchPeak(python, job);
      for (const w of rows) {
        for (const impl of IMPLS) {
          const r = results[impl];
          if (!r || !w.impls[impl].available) continue;
          if (r.error) {
            w.impls[impl].peakMethod = `error: ${r.error}`;
            continue;
          }
          w.impls[impl].peakBytes = r.peakBytes ?? r.peak_bytes ?? null;
          w.impls[impl].peakMethod = `${r.method}; fresh process, ${memThreads} thread(s)`;
          w.impls[impl].firstMs = r.firstMs ?? r.first_ms;
        }
      }
      log(
        `${size.padEnd(14)} p=${p} ${m.padEnd(6)} peak extra memory (fresh process): ` +
          IMPLS.filter((i) => results[i])
            .map(
              (i) =>
                `${i} ${results[i]!.error ? 'error' : `${fmtMB(results[i]!.peakBytes ?? results[i]!.peak_bytes)} MB`}`,
            )
            .join(', '),
      );
    }
  }
  return pinning;
}
