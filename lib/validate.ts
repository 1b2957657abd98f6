/**
 * Argument checks of the public API. Each failure names the argument and what was expected: a TypeError
 * for the wrong kind of value, a RangeError for a value of the right kind outside its allowed range.
 */

/**
 * The indefinite article for a class name: "an" before a vowel sound (an Int16Array, an Object), "a" otherwise,
 * including Uint* (read "you-int": a Uint8Array).
 */
function article(name: string): string {
  return /^[AEIO]/i.test(name) ? 'an' : 'a';
}

/** A short description of a value for error messages. */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'number') return Number.isNaN(value) ? 'NaN' : String(value);
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value);
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'function') return 'a function';
  if (Array.isArray(value)) return 'an array';
  if (ArrayBuffer.isView(value)) return `${article(value.constructor.name)} ${value.constructor.name}`;
  if (typeof value === 'object') return `an object (${(value as object).constructor?.name ?? 'Object'})`;
  return typeof value;
}

export function checkNumber(value: unknown, name: string): number {
  if (typeof value !== 'number') throw new TypeError(`${name} must be a number, got ${describe(value)}`);
  if (!Number.isFinite(value)) throw new RangeError(`${name} must be a finite number, got ${describe(value)}`);
  return value;
}

export function checkInteger(value: unknown, name: string, min = Number.MIN_SAFE_INTEGER): number {
  if (typeof value !== 'number') throw new TypeError(`${name} must be an integer, got ${describe(value)}`);
  if (!Number.isSafeInteger(value)) throw new RangeError(`${name} must be a safe integer, got ${describe(value)}`);
  if (value < min) throw new RangeError(`${name} must be an integer >= ${min}, got ${value}`);
  return value;
}

/** A fraction in (0, 1]. */
export function checkFraction(value: unknown, name: string): number {
  if (typeof value !== 'number') throw new TypeError(`${name} must be a number in (0, 1], got ${describe(value)}`);
  if (!(value > 0 && value <= 1)) throw new RangeError(`${name} must be in (0, 1], got ${describe(value)}`);
  return value;
}

export function checkBoolean(value: unknown, name: string): boolean {
  if (typeof value !== 'boolean') throw new TypeError(`${name} must be a boolean, got ${describe(value)}`);
  return value;
}

export function checkOneOf<T extends string>(value: unknown, name: string, allowed: readonly T[]): T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw new TypeError(`${name} must be one of ${allowed.map((a) => `'${a}'`).join(', ')}, got ${describe(value)}`);
  }
  return value as T;
}

/**
 * The names of an options interface, written once as an object literal so that the compiler checks the list is
 * complete and holds nothing else: `optionNames<CrossEntropyOptions>({ weight: true, ... })`.
 */
export function optionNames<T extends object>(names: { [K in keyof Required<T>]: true }): readonly string[] {
  return Object.freeze(Object.keys(names));
}

/** Edit distance of two short names (insertions, deletions, substitutions). */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length];
}

/** The valid name a misspelt one most likely meant: the same letters in another case or separator style
 * (`ignore_index` for `ignoreIndex`), else the nearest within a few edits. */
export function nearestName(name: string, valid: readonly string[]): string | undefined {
  const plain = (n: string) => n.replace(/[_-]/g, '').toLowerCase();
  const same = valid.find((v) => plain(v) === plain(name));
  if (same) return same;
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.floor(name.length / 3)) + 1;
  for (const v of valid) {
    const d = editDistance(plain(name), plain(v));
    if (d < bestDistance) [best, bestDistance] = [v, d];
  }
  return best;
}

/**
 * An options bag: undefined becomes {}, anything but a plain object is refused, and so is any key that is not one
 * of `names` (a misspelt option would otherwise be ignored and its default silently used).
 */
export function checkOptions<T extends object>(value: unknown, name: string, names: readonly string[]): Partial<T> {
  if (value === undefined) return {};
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new TypeError(`${name} must be an object, got ${describe(value)}`);
  }
  for (const key of Object.keys(value)) {
    if (names.includes(key)) continue;
    const nearest = nearestName(key, names);
    throw new TypeError(
      `${name} has no option '${key}'${nearest ? ` (did you mean '${nearest}'?)` : ''}; its options are ${names.map((n) => `'${n}'`).join(', ')}`,
    );
  }
  return value as Partial<T>;
}

/** A shape: an array of non-negative safe integers whose product is a safe integer. */
export function checkShape(value: unknown, name: string): number[] {
  if (!Array.isArray(value))
    throw new TypeError(`${name} must be an array of non-negative integers, got ${describe(value)}`);
  if (value.length > 16) throw new RangeError(`${name} may have at most 16 dimensions, got ${value.length}`);
  let product = 1;
  // An index loop, not forEach: forEach skips a hole ([2, , 3]), which must be refused by name.
  for (let i = 0; i < value.length; i++) {
    if (!(i in value)) throw new TypeError(`${name}[${i}] is missing: the array has a hole there (e.g. [2, , 3])`);
    const size: unknown = value[i];
    if (typeof size !== 'number') throw new TypeError(`${name}[${i}] must be an integer, got ${describe(size)}`);
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new RangeError(`${name}[${i}] must be a non-negative integer, got ${describe(size)}`);
    }
    product *= size;
  }
  if (!Number.isSafeInteger(product)) throw new RangeError(`${name} describes more than 2^53 elements`);
  return value.slice();
}

export const DEVICE_PATTERN = /^(cpu|cuda(:\d{1,3})?)$/;

export function checkDevice(value: unknown, name: string): string {
  if (typeof value !== 'string' || !DEVICE_PATTERN.test(value)) {
    throw new TypeError(`${name} must be 'cpu', 'cuda' or 'cuda:N', got ${describe(value)}`);
  }
  return value;
}

/** Whether two shapes are equal. */
export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((size, i) => size === b[i]);
}
