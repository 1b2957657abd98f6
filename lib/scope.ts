/**
 * `tidy(fn)`: every tensor created while `fn` runs is disposed when it returns, except the tensors it returns
 * (a Tensor, or Tensors inside the returned arrays and plain objects, at any depth), which move to the enclosing
 * scope. `trainStep(fn)` is the same, named for the loop body it is meant for.
 */
import type { Tensor } from './tensor';
import { describe } from './validate';

const scopes: Set<Tensor>[] = [];

/** Called by every new Tensor. */
export function track(tensor: Tensor): void {
  if (scopes.length > 0) scopes[scopes.length - 1].add(tensor);
}

/**
 * Everything reachable from a returned value through arrays and plain objects (null-prototype ones too), at any
 * depth: the tensors among it are kept. Iterative, with a visited set, so deep or cyclic values are safe.
 */
function collectKept(value: unknown, kept: Set<unknown>): void {
  const pending: unknown[] = [value];
  while (pending.length > 0) {
    const item = pending.pop();
    if (item === null || typeof item !== 'object' || kept.has(item)) continue;
    kept.add(item);
    let children: unknown[] = [];
    if (Array.isArray(item)) {
      children = item;
    } else {
      const proto = Object.getPrototypeOf(item);
      if (proto === Object.prototype || proto === null) children = Object.values(item);
    }
    // One by one, objects only: a returned array may hold millions of numbers (no spread into push's arguments).
    for (const child of children) if (child !== null && typeof child === 'object') pending.push(child);
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
    if (ok) collectKept(result, kept);
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

/**
 * One training step, written as in PyTorch and scoped: every tensor the step creates (activations, the loss,
 * gradients' temporaries) is freed when it returns, except what it returns. Without it (or `tidy`, `dispose`, or
 * an `await` per step), a synchronous loop holds every step's tensors until the event loop turns.
 *
 *   for (let it = 0; it < steps; it++) {
 *     const loss = trainStep(() => {
 *       optimizer.zeroGrad();
 *       const l = bootstrappedCrossEntropy(model.forward(x), y, it, 0.15);
 *       l.backward();
 *       optimizer.step();
 *       return l.item();
 *     });
 *   }
 */
export function trainStep<T>(fn: () => T): T {
  if (typeof fn !== 'function') throw new TypeError(`fn must be a function, got ${describe(fn)}`);
  return tidy(fn);
}
