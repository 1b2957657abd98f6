/**
 * `tidy(fn)`: every tensor created while `fn` runs is disposed when it returns, except the tensors it returns
 * (a Tensor, or Tensors inside the returned arrays and plain objects), which move to the enclosing scope.
 */
import type { Tensor } from './tensor';
import { describe } from './validate';

const scopes: Set<Tensor>[] = [];

/** Called by every new Tensor. */
export function track(tensor: Tensor): void {
  if (scopes.length > 0) scopes[scopes.length - 1].add(tensor);
}

function collectKept(value: unknown, kept: Set<unknown>, depth: number): void {
  if (value === null || typeof value !== 'object' || depth > 8 || kept.has(value)) return;
  kept.add(value);
  if (Array.isArray(value)) {
    for (const item of value) collectKept(item, kept, depth + 1);
  } else if (Object.getPrototypeOf(value) === Object.prototype) {
    for (const item of Object.values(value)) collectKept(item, kept, depth + 1);
  }
}

export function tidy<T>(fn: () => T): T {
  if (typeof fn !== 'function') throw new TypeError(`fn must be a function, got ${describe(fn)}`);
  const scope = new Set<Tensor>();
  scopes.push(scope);
  let result: T | undefined;
  let ok = false;
  try {
    result = fn();
    if (result !== null && typeof (result as { then?: unknown })?.then === 'function') {
      throw new TypeError('tidy(fn) needs a synchronous fn: it returned a Promise');
    }
    ok = true;
    return result;
  } finally {
    scopes.pop();
    const kept = new Set<unknown>();
    if (ok) collectKept(result, kept, 0);
    const parent = scopes[scopes.length - 1];
    for (const tensor of scope) {
      if (kept.has(tensor)) {
        parent?.add(tensor);
      } else {
        tensor.dispose();
      }
    }
  }
}
