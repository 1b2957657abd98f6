/**
 * Data parallelism for TorchScript modules, as PyTorch's DistributedDataParallel: every rank holds a replica,
 * rank 0's parameters are copied to every rank at the start, and after `backward()` each gradient is replaced by
 * its mean over the ranks (in buckets, one all-reduce per bucket), so that N ranks with batch B take the same
 * optimizer steps as one process with batch N * B (for a loss that is a mean over the batch).
 */
import { DEFAULT_BUCKET_BYTES, ProcessGroup, groupOrDefault } from './distributed';
import { Module, ModuleOutput } from './jit';
import { Tensor } from './tensor';
import { checkInteger, checkOptions, describe, optionNames } from './validate';

/** Options of `DistributedDataParallel.create`. */
export interface DataParallelOptions {
  /** The process group. Default: the one `initProcessGroup` made. */
  group?: ProcessGroup;
  /** Bytes of gradients per all-reduce. Default 25 MiB (PyTorch's bucket_cap_mb). */
  bucketBytes?: number;
}

const DATA_PARALLEL_OPTIONS = optionNames<DataParallelOptions>({ group: true, bucketBytes: true });

export class DistributedDataParallel {
  /** The wrapped module (its parameters are this replica's). */
  readonly module: Module;
  readonly group: ProcessGroup;
  private readonly params: Tensor[];
  private readonly bucketBytes: number;

  private constructor(module: Module, group: ProcessGroup, bucketBytes: number) {
    this.module = module;
    this.group = group;
    this.bucketBytes = bucketBytes;
    this.params = module.parameters();
  }

  /**
   * Wraps `module` and copies rank 0's parameters into every rank's (every rank calls it). Resolves when the
   * replicas are equal.
   */
  static async create(module: Module, options?: DataParallelOptions): Promise<DistributedDataParallel> {
    if (!(module instanceof Module)) throw new TypeError(`module must be a jit Module, got ${describe(module)}`);
    const o = checkOptions<DataParallelOptions>(options, 'options', DATA_PARALLEL_OPTIONS);
    const group = groupOrDefault(o.group);
    const bucketBytes =
      o.bucketBytes === undefined ? DEFAULT_BUCKET_BYTES : checkInteger(o.bucketBytes, 'bucketBytes', 1);
    const ddp = new DistributedDataParallel(module, group, bucketBytes);
    await group.live().broadcastTensors(
      ddp.params.map((p) => p.handle),
      0,
      bucketBytes,
      false,
    );
    return ddp;
  }

  /** The module's forward. */
  forward<T extends ModuleOutput = Tensor>(...inputs: Tensor[]): T {
    return this.module.forward<T>(...inputs);
  }

  /** The replica's parameters (shared with the module), for the optimizer. */
  parameters(): Tensor[] {
    return this.params.slice();
  }

  /**
   * After `loss.backward()` on every rank: each parameter's gradient becomes its mean over the ranks (a
   * parameter without a gradient counts as zeros). Await it before `optimizer.step()`.
   */
  async averageGradients(): Promise<void> {
    await this.group.live().averageGradients(
      this.params.map((p) => p.handle),
      this.bucketBytes,
      false,
    );
  }

  /** `averageGradients`, blocking. */
  averageGradientsSync(): void {
    this.group.live().averageGradients(
      this.params.map((p) => p.handle),
      this.bucketBytes,
      true,
    );
  }
}
