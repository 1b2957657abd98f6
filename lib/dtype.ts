/** Element types of tensors, and how they map to JavaScript typed arrays. */
import { types } from 'util';

export const DTYPES = ['float32', 'float64', 'float16', 'bfloat16', 'int32', 'int64', 'uint8', 'bool'] as const;

/** The element type of a tensor, named like PyTorch's `torch.float32`, ... */
export type DType = (typeof DTYPES)[number];

/** What `toArray()` returns: float16/bfloat16 widen to Float32Array, int64 is exact in a BigInt64Array. */
export type TypedArray = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array;

export const FLOATING_DTYPES: readonly DType[] = ['float32', 'float64', 'float16', 'bfloat16'];
export const INDEX_DTYPES: readonly DType[] = ['int64', 'int32', 'uint8'];

export function isFloating(dtype: DType): boolean {
  return FLOATING_DTYPES.includes(dtype);
}

/** The dtype a typed array holds, or undefined for typed arrays that are not accepted. */
export function dtypeOfTypedArray(data: ArrayBufferView): DType | undefined {
  // util.types rather than instanceof: typed arrays from another realm (jest, vm) fail instanceof.
  if (types.isFloat32Array(data)) return 'float32';
  if (types.isFloat64Array(data)) return 'float64';
  if (types.isInt32Array(data)) return 'int32';
  if (types.isBigInt64Array(data)) return 'int64';
  if (types.isUint8Array(data)) return 'uint8';
  return undefined;
}

/** The integers each integer dtype holds, as PyTorch checks them when it builds a tensor from Python numbers. */
const INTEGER_RANGES: Partial<Record<DType, readonly [bigint, bigint]>> = {
  uint8: [0n, 255n],
  int32: [-(2n ** 31n), 2n ** 31n - 1n],
  int64: [-(2n ** 63n), 2n ** 63n - 1n],
};

/**
 * Refuses values an integer dtype cannot hold exactly: not an integer (1.5, NaN, Infinity) or outside its range
 * (300 as uint8 would wrap to 44, 2**31 as int32 to -2**31). `what` names the data in the message.
 */
export function checkIntegerValues(values: ArrayLike<number | bigint>, dtype: DType, what: string): void {
  const range = INTEGER_RANGES[dtype];
  if (range === undefined) return;
  const [low, high] = range;
  const lowNumber = Number(low);
  const highNumber = Number(high);
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (typeof v === 'bigint') {
      if (v >= low && v <= high) continue;
    } else {
      // Fast path for the common case; the exact bigint comparison only at the ends of the int64 range, where
      // Number(high) rounds up to 2**63.
      if (Number.isInteger(v) && v > lowNumber && v < highNumber) continue;
      if (Number.isInteger(v) && BigInt(v) >= low && BigInt(v) <= high) continue;
      if (!Number.isInteger(v)) {
        throw new RangeError(`${what}[${i}] is ${v}, which is not an integer; dtype ${dtype} needs integers`);
      }
    }
    throw new RangeError(`${what}[${i}] is ${v}, outside the range of ${dtype} [${low}, ${high}]`);
  }
}
