/**
 * The addon side of the benchmark: data, one timed call, the fused-kernel probe and the peak-memory probe.
 * Shared by main.ts (timing, in-process) and mem_child.ts (peak memory, one fresh process per workload).
 */
import * as fs from 'fs';
import * as bce from '../../lib';

export type Mode = 'fwd' | 'fwdbwd';
export type AddonImpl = 'reference' | 'fused';

export interface AddonData {
  x: bce.Tensor;
  y: bce.Tensor;
  device: string;
}

/** Logits (randn) and int64 labels (randint) made with the same generator calls as torch_bench.py's "data". */
export function makeData(shape: number[], seed: number, device: string): AddonData {
  bce.manualSeed(seed);
  const x = bce.randn(shape);
  const y = bce.randint(0, shape[1], [shape[0], ...shape.slice(2)]);
  if (device === 'cpu') return { x, y, device };
  const data = { x: x.to(device), y: y.to(device), device };
  x.dispose();
  y.dispose();
  return data;
}

export function disposeData(data: AddonData): void {
  data.x.dispose();
  data.y.dispose();
}

/**
 * One call, timed with process.hrtime around the op only. 'fwd': logits without requiresGrad. 'fwdbwd': a fresh
 * leaf on the same storage (detach + requiresGrad, no copy), forward and backward; the fresh gradient is freed
 * afterwards, as PyTorch's side does. On CUDA, loss.item() inside the clock waits for the queued kernels.
 */
export function oneCall(
  data: AddonData,
  p: number,
  mode: Mode,
  impl: AddonImpl,
): { ms: number; loss: number; k: number; fused: boolean } {
  const cuda = data.device !== 'cpu';
  if (mode === 'fwd') {
    const t0 = process.hrtime.bigint();
    const r = bce.bootstrappedCrossEntropyWithStats(data.x, data.y, 0, p, { impl });
    const value = cuda ? r.loss.item() : NaN;
    const t1 = process.hrtime.bigint();
    const loss = cuda ? value : r.loss.item();
    r.loss.dispose();
    return { ms: Number(t1 - t0) / 1e6, loss, k: r.k, fused: r.fused };
  }
  const leaf = data.x.detach();
  leaf.requiresGrad = true;
  const t0 = process.hrtime.bigint();
  const r = bce.bootstrappedCrossEntropyWithStats(leaf, data.y, 0, p, { impl });
  r.loss.backward();
  const value = cuda ? r.loss.item() : NaN;
  const t1 = process.hrtime.bigint();
  const loss = cuda ? value : r.loss.item();
  r.loss.dispose();
  leaf.dispose(); // drops the last reference to the gradient
  return { ms: Number(t1 - t0) / 1e6, loss, k: r.k, fused: r.fused };
}

/**
 * Calls every implementation and pass on a small input for `ms` milliseconds, untimed. The facade's JavaScript is
 * interpreted at first and compiled by V8 only after thousands of calls: without this, the first workloads of a
 * run measured the addon 10-60 % slow in its early rounds (33 us per call at 1x19x32x32 settled only after ~10,000
 * calls), which a training loop never sees. Python has no such phase.
 */
export function warmUpJit(classes: number, device: string, ms: number): number {
  const data = makeData([1, classes, 32, 32], 1, device);
  const modes: Mode[] = ['fwd', 'fwdbwd'];
  const impls: AddonImpl[] = ['reference', 'fused'];
  const until = process.hrtime.bigint() + BigInt(Math.round(ms * 1e6));
  let calls = 0;
  try {
    while (process.hrtime.bigint() < until) {
      for (const mode of modes) for (const impl of impls) oneCall(data, 0.25, mode, impl);
      calls += modes.length * impls.length;
    }
  } catch {
    // impl 'fused' refused (no fused kernel in this build, or a CUDA input): warm up the reference path alone.
    while (process.hrtime.bigint() < until) {
      for (const mode of modes) oneCall(data, 0.25, mode, 'reference');
      calls += modes.length;
    }
  } finally {
    disposeData(data);
  }
  return calls;
}

/** Whether impl 'fused' runs the fused kernel for this workload; the reason where it does not. */
export function probeFused(
  data: AddonData,
  p: number,
  mode: Mode,
): { available: boolean; reason?: string; autoFused: boolean } {
  let autoFused = false;
  try {
    const leaf = data.x.detach();
    if (mode === 'fwdbwd') leaf.requiresGrad = true;
    const r = bce.bootstrappedCrossEntropyWithStats(leaf, data.y, 0, p, { impl: 'auto' });
    autoFused = r.fused;
    r.loss.dispose();
    leaf.dispose();
  } catch {
    autoFused = false;
  }
  try {
    const r = oneCall(data, p, mode, 'fused');
    if (!r.fused)
      return { available: false, reason: "impl 'fused' ran the reference path (fused kernel not built)", autoFused };
    return { available: true, autoFused };
  } catch (error) {
    const message = String((error as Error)?.message ?? error).split('\n')[0];
    return { available: false, reason: message, autoFused };
  }
}

function statusKb(field: string): number | undefined {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return match ? Number(match[1]) : undefined;
}

function resetHighWaterMark(): boolean {
  try {
    fs.writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}

/**
 * Peak memory of one call in this process (meant to be fresh: see mem_child.ts): VmHWM after the call minus
 * VmRSS before it, the high-water mark being reset to the current RSS first (/proc/self/clear_refs). The first
 * call also gives a "cold" time, page faults and thread start-up included.
 */
export function measurePeak(data: AddonData, p: number, mode: Mode, impl: AddonImpl) {
  if (data.device !== 'cpu') {
    oneCall(data, p, mode, impl);
    const r = oneCall(data, p, mode, impl);
    return {
      peakBytes: null,
      method: 'not measured on CUDA (the addon has no CUDA allocator statistics)',
      firstMs: r.ms,
      loss: r.loss,
      fused: r.fused,
    };
  }
  // One call on a tiny input first, so that one-time initialisation (thread pool, kernels) is not counted.
  const small = makeData([1, data.x.shape[1], 8, 8], 1, data.device);
  oneCall(small, p, mode, impl);
  disposeData(small);
  (globalThis as { gc?: () => void }).gc?.();
  const reset = resetHighWaterMark();
  const rss0 = statusKb('VmRSS') ?? 0;
  const hwm0 = statusKb('VmHWM') ?? 0;
  const r = oneCall(data, p, mode, impl);
  const hwm1 = statusKb('VmHWM') ?? 0;
  const base = reset ? rss0 : hwm0;
  return {
    peakBytes: Math.max(0, hwm1 - base) * 1024,
    method: reset
      ? 'VmHWM after - VmRSS before (HWM reset via clear_refs)'
      : 'VmHWM after - VmHWM before (clear_refs not permitted: a lower bound)',
    firstMs: r.ms,
    loss: r.loss,
    fused: r.fused,
  };
}
