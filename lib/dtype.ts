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
