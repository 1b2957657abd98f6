/**
 * The one parser of numeric command-line options for the scripts (demo, soak, parity, fuzzer, benchmarks). Each
 * factory takes the option's name and returns a parser of one value, usable as a commander `argParser`; a bad value
 * throws commander's `InvalidArgumentError` with a message naming the option, what it expects and what it got (so
 * the message is as clear where a script parses its arguments without commander, or parses a list's items).
 *
 *   new Option('--iterations <n>', '...').default(1000).argParser(positiveInteger('--iterations'))
 */
import { InvalidArgumentError } from 'commander';

/** A parser of one option value. */
export type NumberParser = (value: string) => number;

/** A decimal integer: optional sign, digits only (no '1e3', '0x10', '1.0' or empty string). */
const INTEGER_TEXT = /^[+-]?\d+$/;

function fail(option: string, expected: string, value: string): never {
  throw new InvalidArgumentError(`${option} expects ${expected}, got '${value}'`);
}

/** A number written in decimal or exponent notation; anything else (empty, 'abc', 'Infinity', '0x10') fails. */
function finiteNumber(option: string, expected: string, value: string): number {
  const text = value.trim();
  const n = Number(text);
  if (text === '' || !Number.isFinite(n) || /^[+-]?0[xob]/i.test(text)) fail(option, expected, value);
  return n;
}

/** A whole number >= `min` (a safe integer). */
export function integer(option: string, min = 0): NumberParser {
  const expected = min === 0 ? 'a non-negative integer' : min === 1 ? 'a positive integer' : `an integer >= ${min}`;
  return (value) => {
    const n = Number(value.trim());
    if (!INTEGER_TEXT.test(value.trim()) || !Number.isSafeInteger(n) || n < min) fail(option, expected, value);
    return n;
  };
}

/** A whole number >= 1. */
export function positiveInteger(option: string): NumberParser {
  return integer(option, 1);
}

/** A whole number >= 0 (a PRNG seed, a count that may be zero). */
export function nonNegativeInteger(option: string): NumberParser {
  return integer(option, 0);
}

/** A finite number > 0. */
export function positiveNumber(option: string): NumberParser {
  return (value) => {
    const n = finiteNumber(option, 'a positive number', value);
    if (!(n > 0)) fail(option, 'a positive number', value);
    return n;
  };
}

/** A fraction in (0, 1], such as the kept fraction p of the bootstrapped losses. */
export function fraction(option: string): NumberParser {
  return (value) => {
    const n = finiteNumber(option, 'a number in (0, 1]', value);
    if (!(n > 0 && n <= 1)) fail(option, 'a number in (0, 1]', value);
    return n;
  };
}

/** A comma-separated list, each item parsed by `item` (empty items are skipped): '1, 2,4' -> [1, 2, 4]. */
export function list<T>(item: (value: string) => T): (value: string) => T[] {
  return (value) =>
    value
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean)
      .map(item);
}

/**
 * A tensor shape written with 'x' between positive sizes, e.g. '8x19x512x1024', with between `rank.min` and
 * `rank.max` dimensions (`rank.max` may be Infinity).
 */
export function shape(option: string, rank: { min: number; max: number }): (value: string) => number[] {
  const dims =
    rank.min === rank.max
      ? `${rank.min}`
      : rank.max === Infinity
        ? `${rank.min} or more`
        : `${rank.min} to ${rank.max}`;
  const expected = `a shape of ${dims} positive sizes joined by 'x' (e.g. 8x19x512x1024)`;
  return (value) => {
    const parts = value.trim().toLowerCase().split('x');
    if (parts.length < rank.min || parts.length > rank.max) fail(option, expected, value);
    return parts.map((part) => {
      if (!INTEGER_TEXT.test(part) || Number(part) < 1) fail(option, expected, value);
      return Number(part);
    });
  };
}
