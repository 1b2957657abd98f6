/**
 * A warning, once per thread, when the native memory held by live tensor handles passes a threshold (1 GiB by
 * default). In a synchronous loop written as in PyTorch, tensors that JavaScript no longer references are
 * collected, but their native memory is freed only by finalizers, which Node runs after the event loop turns:
 * such a loop grows until it runs out of memory, with no word of why. This says why, and what to do.
 */
import { native } from './native';

const CHECK_EVERY = 64; // tensor creations between two looks at the native count (one look is ~1 µs)
const DEFAULT_THRESHOLD = 1024 ** 3;

let threshold = initialThreshold();
let created = 0;
let warned = false;

function initialThreshold(): number {
  const value = process.env.BOOTSTRAPPED_CE_MEMORY_WARNING_BYTES;
  if (value === undefined || value === '') return DEFAULT_THRESHOLD;
  const bytes = Number(value);
  if (Number.isFinite(bytes) && bytes >= 0) return bytes;
  process.emitWarning(
    `BOOTSTRAPPED_CE_MEMORY_WARNING_BYTES=${JSON.stringify(value)} is not a number of bytes; ignored (1 GiB applies)`,
    {
      code: 'BOOTSTRAPPED_CE_ENV',
    },
  );
  return DEFAULT_THRESHOLD;
}

/** Called for every new Tensor. */
export function noteTensorCreated(): void {
  if (warned || ++created % CHECK_EVERY !== 0) return;
  const { bytes, tensors } = native.memory();
  if (bytes <= threshold) return;
  warned = true;
  const gib = (n: number) => `${(n / 1024 ** 3).toFixed(2)} GiB`;
  process.emitWarning(
    `${tensors} live tensors hold ${gib(bytes)} of native memory (warning threshold ${gib(threshold)}). Tensors ` +
      'that JavaScript no longer references are freed only after the event loop turns, so a synchronous loop ' +
      "keeps every step's tensors. Scope each step with trainStep(() => { ... }) or tidy(), call dispose() on " +
      'tensors you are done with, or await something once per step. See "Memory" in the README.',
    { code: 'BOOTSTRAPPED_CE_MEMORY' },
  );
}

/**
 * Sets the native memory (bytes held by this thread's live tensors) above which the warning is given, and lets it
 * be given again. `Infinity` turns it off. Default 1 GiB, or `BOOTSTRAPPED_CE_MEMORY_WARNING_BYTES`.
 */
export function setMemoryWarningThreshold(bytes: number): void {
  if (typeof bytes !== 'number' || Number.isNaN(bytes) || bytes < 0) {
    throw new RangeError(`bytes must be a number >= 0 (Infinity turns the warning off), got ${String(bytes)}`);
  }
  threshold = bytes;
  warned = false;
}
