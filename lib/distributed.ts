/**
 * Data-parallel training across processes, on LibTorch's own distributed engine (c10d): a TCPStore rendezvous
 * and Gloo collectives, as `torch.distributed` with `backend='gloo'`. One process per rank; start them with
 * `npx bootstrapped-ce-run --nproc-per-node N script.js` (bin/bootstrapped-ce-run.js), which sets the
 * environment that `initProcessGroup()` reads (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK).
 *
 * Collectives return Promises settled when every rank has taken part: the waiting happens off the event loop.
 * Every rank must issue the same collectives in the same order. The `...Sync` forms block until done.
 */
import { native, NativeHandle, NativeProcessGroup } from './native';
import { Tensor, checkTensor } from './tensor';
import { checkInteger, checkOneOf, checkOptions, describe, optionNames } from './validate';

/** 'gloo' (CPU and CUDA tensors, over TCP) or 'nccl' (CUDA only; not in this build). */
export type Backend = 'gloo' | 'nccl';

/** How `allReduce` combines the ranks' tensors elementwise. 'avg' needs a floating-point tensor. */
export type ReduceOp = 'sum' | 'product' | 'min' | 'max' | 'avg';

/** Options of `initProcessGroup`; each defaults from torchrun's environment variables. */
export interface InitProcessGroupOptions {
  /** 'gloo' (default). 'nccl' needs CUDA and a build with NCCL, which this one lacks: a clear error. */
  backend?: Backend;
  /** This process's rank in [0, worldSize). Default: RANK. */
  rank?: number;
  /** How many processes take part. Default: WORLD_SIZE. */
  worldSize?: number;
  /** Address of rank 0, which hosts the rendezvous store. Default: MASTER_ADDR, else '127.0.0.1'. */
  masterAddr?: string;
  /** TCP port of the rendezvous store on rank 0. Default: MASTER_PORT, else 29500 (PyTorch's). */
  masterPort?: number;
  /**
   * How long to wait for the other ranks, at the rendezvous and in every collective, in milliseconds.
   * Default 1800000 (30 minutes, PyTorch's).
   */
  timeoutMs?: number;
}

const INIT_OPTIONS = optionNames<InitProcessGroupOptions>({
  backend: true,
  rank: true,
  worldSize: true,
  masterAddr: true,
  masterPort: true,
  timeoutMs: true,
});

/** Bytes per bucket when gradients or parameters travel together (PyTorch DDP's default bucket_cap_mb = 25). */
export const DEFAULT_BUCKET_BYTES = 25 * 1024 * 1024;

/** Whether this build of the addon can run distributed (it was built with Gloo's headers). */
export function isAvailable(): boolean {
  return native.distributedInfo().available;
}

/** Why distributed training is unavailable in this build; '' when it is available. */
export function unavailableReason(): string {
  return native.distributedInfo().reason;
}

function fromEnv(name: string, fallback?: number): number | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isSafeInteger(value))
    throw new RangeError(`environment variable ${name} must be an integer, got '${raw}'`);
  return value;
}

function required(value: number | undefined, option: string, variable: string): number {
  if (value === undefined) {
    throw new TypeError(
      `${option} was not given and ${variable} is not set: pass { ${option} } or start the ranks with ` +
        '`npx bootstrapped-ce-run --nproc-per-node N script.js`',
    );
  }
  return value;
}

/** A group of processes that run collectives together. */
export class ProcessGroup {
  /** @internal */
  readonly native: NativeProcessGroup;
  readonly backend: Backend;
  readonly rank: number;
  readonly worldSize: number;
  private destroyed = false;

  /** @internal Use `initProcessGroup`. */
  constructor(handle: NativeProcessGroup, backend: Backend, rank: number, worldSize: number) {
    this.native = handle;
    this.backend = backend;
    this.rank = rank;
    this.worldSize = worldSize;
  }

  /** Combines `tensor` (contiguous) over the ranks, in place. */
  async allReduce(tensor: Tensor, op: ReduceOp = 'sum'): Promise<void> {
    await this.live().allReduce(checkTensor(tensor, 'tensor').handle, checkOp(op), false);
  }

  /** `allReduce`, blocking until every rank has taken part. */
  allReduceSync(tensor: Tensor, op: ReduceOp = 'sum'): void {
    this.live().allReduce(checkTensor(tensor, 'tensor').handle, checkOp(op), true);
  }

  /** Copies rank `src`'s `tensor` into every rank's `tensor` (same shape and dtype), in place. */
  async broadcast(tensor: Tensor, src = 0): Promise<void> {
    await this.live().broadcast(checkTensor(tensor, 'tensor').handle, this.checkRank(src, 'src'), false);
  }

  /** `broadcast`, blocking. */
  broadcastSync(tensor: Tensor, src = 0): void {
    this.live().broadcast(checkTensor(tensor, 'tensor').handle, this.checkRank(src, 'src'), true);
  }

  /** Every rank's `tensor` (same shape and dtype on every rank), in rank order, as new Tensors. */
  async allGather(tensor: Tensor): Promise<Tensor[]> {
    const handles = await this.live().allGather(checkTensor(tensor, 'tensor').handle, false);
    return handles.map((handle) => new Tensor(handle));
  }

  /** `allGather`, blocking. */
  allGatherSync(tensor: Tensor): Tensor[] {
    const handles = this.live().allGather(checkTensor(tensor, 'tensor').handle, true) as NativeHandle[];
    return handles.map((handle) => new Tensor(handle));
  }

  /** Resolves once every rank has reached this barrier. */
  async barrier(): Promise<void> {
    await this.live().barrier(false);
  }

  /** `barrier`, blocking. */
  barrierSync(): void {
    this.live().barrier(true);
  }

  /** Leaves the group and frees it; later calls throw. Idempotent. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.native.destroy();
    if (defaultGroup === this) defaultGroup = undefined;
  }

  get isDestroyed(): boolean {
    return this.destroyed;
  }

  /** @internal */
  live(): NativeProcessGroup {
    if (this.destroyed) throw new Error('the process group was destroyed (destroyProcessGroup)');
    return this.native;
  }

  /** @internal */
  checkRank(value: unknown, name: string): number {
    const rank = checkInteger(value, name, 0);
    if (rank >= this.worldSize) throw new RangeError(`${name} must be a rank in [0, ${this.worldSize}), got ${rank}`);
    return rank;
  }
}

const REDUCE_OPS = ['sum', 'product', 'min', 'max', 'avg'] as const;

function checkOp(op: unknown): ReduceOp {
  return checkOneOf(op, 'op', REDUCE_OPS);
}

let defaultGroup: ProcessGroup | undefined;

/**
 * Joins the process group (every rank calls it, with the same worldSize, masterAddr and masterPort) and makes
 * it the default group of `allReduce`, `broadcast`, ... and of the losses' `scope: 'global'`. Resolves once
 * every rank has joined; rejects after `timeoutMs` if one never comes.
 */
export async function initProcessGroup(options?: InitProcessGroupOptions): Promise<ProcessGroup> {
  const o = checkOptions<InitProcessGroupOptions>(options, 'options', INIT_OPTIONS);
  const backend = o.backend === undefined ? 'gloo' : checkOneOf(o.backend, 'backend', ['gloo', 'nccl'] as const);
  const rank = checkInteger(required(o.rank ?? fromEnv('RANK'), 'rank', 'RANK'), 'rank', 0);
  const worldSize = checkInteger(
    required(o.worldSize ?? fromEnv('WORLD_SIZE'), 'worldSize', 'WORLD_SIZE'),
    'worldSize',
    1,
  );
  if (rank >= worldSize) throw new RangeError(`rank must be in [0, worldSize = ${worldSize}), got ${rank}`);
  const masterAddr = o.masterAddr ?? (process.env.MASTER_ADDR || '127.0.0.1');
  if (typeof masterAddr !== 'string' || masterAddr.length === 0) {
    throw new TypeError(`masterAddr must be a non-empty string, got ${describe(masterAddr)}`);
  }
  const masterPort = checkInteger(o.masterPort ?? fromEnv('MASTER_PORT', 29500), 'masterPort', 1);
  if (masterPort > 65535) throw new RangeError(`masterPort must be in [1, 65535], got ${masterPort}`);
  const timeoutMs = checkInteger(o.timeoutMs ?? 1800000, 'timeoutMs', 1);
  if (defaultGroup !== undefined) {
    throw new Error('initProcessGroup was already called in this process; call destroyProcessGroup() first');
  }
  const info = native.distributedInfo();
  if (!info.available || native.ProcessGroupHandle === undefined) {
    throw new Error(`distributed training is not available in this build: ${info.reason}`);
  }
  if (backend === 'nccl') {
    throw new Error(
      native.cudaIsAvailable()
        ? "backend 'nccl' is not in this build (it has Gloo only); use backend 'gloo', which also reduces CUDA tensors"
        : "backend 'nccl' needs CUDA, which is not available here (cuda.isAvailable() is false); use backend 'gloo'",
    );
  }
  const handle = new native.ProcessGroupHandle();
  await handle.init(rank, worldSize, masterAddr, masterPort, timeoutMs);
  const group = new ProcessGroup(handle, backend, rank, worldSize);
  defaultGroup = group;
  return group;
}

/** Whether `initProcessGroup` has made a default group (and it was not destroyed). */
export function isInitialized(): boolean {
  return defaultGroup !== undefined;
}

/** The default process group; an Error before `initProcessGroup`. */
export function getDefaultGroup(): ProcessGroup {
  if (defaultGroup === undefined) {
    throw new Error('no process group: await distributed.initProcessGroup() first');
  }
  return defaultGroup;
}

/** A group given by the caller, or the default group. */
export function groupOrDefault(group: unknown, name = 'group'): ProcessGroup {
  if (group === undefined) return getDefaultGroup();
  if (!(group instanceof ProcessGroup)) throw new TypeError(`${name} must be a ProcessGroup, got ${describe(group)}`);
  group.live();
  return group;
}

/** This process's rank in the default group. */
export function getRank(): number {
  return getDefaultGroup().rank;
}

/** The number of processes in the default group. */
export function getWorldSize(): number {
  return getDefaultGroup().worldSize;
}

/** This process's rank on its machine (LOCAL_RANK, set by the launcher), e.g. to pick its GPU; 0 when unset. */
export function getLocalRank(): number {
  return fromEnv('LOCAL_RANK', 0) as number;
}

/** `allReduce` on the default group (rejects before `initProcessGroup`). */
export async function allReduce(tensor: Tensor, op: ReduceOp = 'sum'): Promise<void> {
  return getDefaultGroup().allReduce(tensor, op);
}

/** `broadcast` on the default group. */
export async function broadcast(tensor: Tensor, src = 0): Promise<void> {
  return getDefaultGroup().broadcast(tensor, src);
}

/** `allGather` on the default group. */
export async function allGather(tensor: Tensor): Promise<Tensor[]> {
  return getDefaultGroup().allGather(tensor);
}

/** `barrier` on the default group. */
export async function barrier(): Promise<void> {
  return getDefaultGroup().barrier();
}

/** Destroys the default group (or `group`). Without a group to destroy, does nothing. */
export function destroyProcessGroup(group?: ProcessGroup): void {
  (group ?? defaultGroup)?.destroy();
}
