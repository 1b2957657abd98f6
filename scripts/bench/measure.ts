/**
 * The benchmark's timing: one workload (a size, p, pass and thread count) timed for every implementation in
 * interleaved rounds, with the machine's memory bandwidth that gives each workload its floor.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as bce from '../../lib';
import { PythonWorker } from '../../test/helpers/torch-worker';
import { AddonData, AddonImpl, Mode, oneCall, probeFused } from './addon';
import { log } from './format';

export type ImplName = 'torch' | AddonImpl;
export const IMPLS: ImplName[] = ['reference', 'fused', 'torch'];

export interface Stats {
  reps: number;
  median: number;
  min: number;
  max: number;
}

export function stats(times: number[]): Stats {
  const sorted = [...times].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  return { reps: sorted.length, median, min: sorted[0], max: sorted[sorted.length - 1] };
}

/** One implementation's figures at one workload. */
export interface ImplResult extends Partial<Stats> {
  available: boolean;
  reason?: string;
  times?: number[];
  /** Untimed calls at the start of each round, and the median of their times. */
  roundWarmups?: number;
  roundWarmupMedian?: number;
  gbps?: number;
  ratio?: number;
  /** min / PyTorch min: less sensitive to other processes than the ratio of medians. */
  minRatio?: number;
  loss?: number;
  k?: number;
  peakBytes?: number | null;
  peakMethod?: string;
  firstMs?: number;
  ofFloor?: number;
}

export interface Workload {
  size: string;
  shape: number[];
  p: number;
  mode: Mode;
  threads: number;
  bytes: { logits: number; labels: number; effective: number; floor: number };
  floorMs?: number;
  autoFused?: boolean;
  loadavg: number[];
  impls: Record<ImplName, ImplResult>;
}

export function cpuModel(): string {
  try {
    const match = /^model name\s*:\s*(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'));
    if (match) return match[1].trim();
  } catch {
    /* not Linux */
  }
  return os.cpus()[0]?.model ?? 'unknown';
}

/** Copy bandwidth of one Node thread: Float64Array.set over 256 MB (read + write bytes / time, best of 5). */
function nodeCopyBandwidth(): number {
  const n = 32 * 1000 * 1000;
  const src = new Float64Array(n).fill(1);
  const dst = new Float64Array(n).fill(0);
  let best = Infinity;
  for (let i = 0; i < 5; i++) {
    const t0 = process.hrtime.bigint();
    dst.set(src);
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return (2 * n * 8) / best / 1e9;
}

/** Memory bandwidth in GB/s: PyTorch's copy and read at each thread count, one Node thread's copy. */
export interface Bandwidth {
  nodeCopy1Thread?: number;
  torch: Record<number, { copy: number; read: number }>;
}

/** Memory bandwidth: torch copy_ of a preallocated 256 MB buffer at each thread count, and one Node thread. */
export async function measureBandwidth(
  worker: PythonWorker | undefined,
  threadList: number[],
  device: string,
): Promise<Bandwidth> {
  const bandwidth: Bandwidth = { torch: {} };
  if (device === 'cpu') bandwidth.nodeCopy1Thread = nodeCopyBandwidth();
  if (worker) {
    for (const t of threadList) {
      const r = await worker.request<{ copy_gbps: number; read_gbps: number }>({
        cmd: 'bandwidth',
        threads: t,
        mb: 256,
        device,
      });
      bandwidth.torch[t] = { copy: r.copy_gbps, read: r.read_gbps };
    }
  }
  return bandwidth;
}

/** The copy bandwidth at `threads` threads (GB/s), when measured. */
export function copyBandwidth(bandwidth: Bandwidth, threads: number): number | undefined {
  return bandwidth.torch[threads]?.copy ?? (threads === 1 ? bandwidth.nodeCopy1Thread : undefined);
}

export interface Pinning {
  pinned: boolean;
  /** The CPUs of the last request (the first t allowed CPUs for t threads, or all of them). */
  cpus?: number[];
  reason?: string;
  /** The worker ended while this process was pinned. */
  stranded?: boolean;
}

/**
 * Puts every thread of this process and of the PyTorch worker on the same `threads` CPUs, or back on every CPU
 * when `threads` is undefined (torch_bench.py's cmd_pin, which explains why). Called before each workload's warm-up
 * and before the memory probes; a refusal is reported once and timing goes on unpinned.
 */
export async function pinProcesses(
  worker: PythonWorker,
  threads: number | undefined,
  previous: Pinning | undefined,
): Promise<Pinning> {
  if (previous && !previous.pinned) return previous;
  let result: Pinning;
  try {
    result = await worker.request<Pinning>({ cmd: 'pin', pids: [process.pid], cpus: threads });
  } catch (error) {
    result = { pinned: false, reason: (error as Error).message.split('\n')[0] };
  }
  if (!previous)
    log(
      result.pinned
        ? `timing both processes on the same CPUs: the first t allowed CPUs for t threads`
        : `not pinned: ${result.reason}`,
    );
  return result;
}

/** One workload to time, on data both processes already hold. */
export interface WorkloadSpec {
  data: AddonData;
  shape: number[];
  p: number;
  mode: Mode;
  threads: number;
  /** Timed calls per implementation, split into rounds of `perRound`; `warmups` untimed calls first. */
  reps: number;
  perRound: number;
  warmups: number;
  /** The PyTorch worker, when it holds the data; `torchMissing` says why not otherwise. */
  worker?: PythonWorker;
  torchReady: boolean;
  torchMissing: string;
  /** Copy bandwidth at `threads` threads (GB/s), for the floor. */
  copyGBps?: number;
  pin: boolean;
}

/**
 * Times one workload: warm-up, then rounds; each round runs every implementation `perRound` times, the order
 * rotating. Returns the workload's figures and the pinning now in effect.
 */
export async function measureWorkload(
  spec: WorkloadSpec,
  pinningBefore: Pinning | undefined,
): Promise<{ workload: Workload; pinning: Pinning | undefined }> {
  const { data, shape, p, mode: m, threads, reps, perRound, warmups, worker } = spec;
  let pinning = pinningBefore;
  bce.setNumThreads(threads);
  const elements = shape.reduce((a, b) => a * b, 1);
  const pixels = elements / shape[1];
  const T = 4 * elements;
  const L = 8 * pixels;
  const P4 = 4 * pixels;
  const floorBytes = m === 'fwd' ? T + L + P4 : 3 * T + 2 * L + 2 * P4;
  const bw = spec.copyGBps;
  const w: Workload = {
    size: shape.join('x'),
    shape,
    p,
    mode: m,
    threads,
    bytes: { logits: T, labels: L, effective: m === 'fwd' ? T : 2 * T, floor: floorBytes },
    floorMs: bw ? (floorBytes / (bw * 1e9)) * 1e3 : undefined,
    loadavg: os.loadavg(),
    impls: { reference: { available: true }, fused: { available: false }, torch: { available: spec.torchReady } },
  };
  const probe = probeFused(data, p, m);
  w.autoFused = probe.autoFused;
  w.impls.fused = probe.available ? { available: true } : { available: false, reason: probe.reason };
  if (!spec.torchReady) w.impls.torch.reason = spec.torchMissing;

  const times: Record<ImplName, number[]> = { reference: [], fused: [], torch: [] };
  const warmupTimes: Record<ImplName, number[]> = { reference: [], fused: [], torch: [] };
  const last: Partial<Record<ImplName, { loss: number; k: number }>> = {};
  // `skip` untimed calls, then n timed ones (recorded in `into`).
  const runAddon = (impl: AddonImpl, skip: number, n: number, into: number[][]) => {
    for (let i = 0; i < skip + n; i++) {
      const r = oneCall(data, p, m, impl);
      into[i < skip ? 0 : 1].push(r.ms);
      last[impl] = { loss: r.loss, k: r.k };
    }
  };
  const runTorch = async (skip: number, n: number, into: number[][]) => {
    try {
      const r = await worker!.request<{ times_ms: number[]; loss: number; k: number }>({
        cmd: 'time',
        p,
        mode: m,
        threads,
        reps: skip + n,
      });
      into[0].push(...r.times_ms.slice(0, skip));
      into[1].push(...r.times_ms.slice(skip));
      last.torch = { loss: r.loss, k: r.k };
    } catch (error) {
      w.impls.torch = { available: false, reason: (error as Error).message.split('\n')[0] };
    }
  };
  const run = (impl: ImplName, skip: number, n: number, into: number[][]) =>
    impl === 'torch' ? runTorch(skip, n, into) : Promise.resolve(runAddon(impl, skip, n, into));
  const active = IMPLS.filter((impl) => w.impls[impl].available);
  // The first calls after the other process's turn run up to 3-4x slower, on both sides, recovering over ~5 ms of
  // calls, so each round starts with untimed calls worth ~5 ms (at least one) per implementation: the figures are
  // steady-state times, as in a loop that calls the loss step after step.
  const roundWarmups: Partial<Record<ImplName, number>> = {};
  if (spec.pin && worker?.alive) pinning = await pinProcesses(worker, threads, pinning);
  else if (pinning?.pinned && !pinning.stranded) {
    // Only the worker can change the masks; this process keeps the last workload's CPUs.
    pinning.stranded = true;
    log(`warning: the PyTorch worker is gone; the addon's later timings run on CPUs ${pinning.cpus?.join(',')} only`);
  }
  for (const impl of active) {
    const initial: number[] = [];
    await run(impl, warmups, 0, [initial, []]);
    const perCall = initial.length ? stats(initial).median : Infinity; // empty when the worker failed
    roundWarmups[impl] = Math.min(100, Math.max(1, Math.ceil(5 / perCall)));
  }
  for (let round = 0; times.reference.length < reps; round++) {
    const n = Math.min(perRound, reps - times.reference.length);
    for (let j = 0; j < active.length; j++) {
      const impl = active[(round + j) % active.length];
      if (!w.impls[impl].available) continue;
      await run(impl, roundWarmups[impl]!, n, [warmupTimes[impl], times[impl]]);
    }
  }
  const torchStats = w.impls.torch.available && times.torch.length ? stats(times.torch) : undefined;
  for (const impl of IMPLS) {
    const result = w.impls[impl];
    if (!result.available || times[impl].length === 0) continue;
    const s = stats(times[impl]);
    Object.assign(result, s, {
      times: times[impl],
      roundWarmups: roundWarmups[impl],
      roundWarmupMedian: warmupTimes[impl].length ? stats(warmupTimes[impl]).median : undefined,
      gbps: w.bytes.effective / (s.median * 1e6),
      ratio: torchStats ? s.median / torchStats.median : undefined,
      minRatio: torchStats ? s.min / torchStats.min : undefined,
      ofFloor: w.floorMs ? w.floorMs / s.median : undefined,
      loss: last[impl]?.loss,
      k: last[impl]?.k,
    });
  }
  return { workload: w, pinning };
}
