/**
 * Fuzzer for the native entry points: calls every export of the raw addon (lib/native.ts `native`) and every
 * TensorHandle method with seeded random arguments, catching JavaScript exceptions. Meant to run in a child
 * process (test/fuzz.test.ts): a crash shows up as a signal or a non-zero exit instead of killing the runner.
 *
 *   ts-node --transpile-only scripts/fuzz-child.ts [--seed N] [--calls N]
 *
 * Sizes are capped (at most a few thousand elements per tensor) so that no call can make the kernel OOM-kill
 * the process, except a fixed list of giant requests that must fail cleanly. Prints one JSON line at the end.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { native, NativeHandle } from '../lib/native';
import { mulberry32 } from '../test/helpers/prng';
import { NumberParser, nonNegativeInteger, positiveInteger } from './cli-numbers';

const args = process.argv.slice(2);
const flag = (name: string, parse: NumberParser, fallback: number): number => {
  const i = args.indexOf(name);
  return i >= 0 ? parse(args[i + 1] ?? '') : fallback;
};
const seed = flag('--seed', nonNegativeInteger('--seed'), 12345);
const totalCalls = flag('--calls', positiveInteger('--calls'), 12000);
// --only NAME: call only that native function (e.g. callOperator), no TensorHandle methods.
const only = args.includes('--only') ? args[args.indexOf('--only') + 1] : undefined;

const random = mulberry32(seed);
const int = (n: number): number => Math.floor(random() * n);
const pick = <T>(items: readonly T[]): T => items[int(items.length)];
const chance = (p: number): boolean => random() < p;

const DTYPES = ['float32', 'float64', 'float16', 'bfloat16', 'int32', 'int64', 'uint8', 'bool'];
const DEVICES = ['cpu', 'cpu', 'cpu', 'cuda', 'cuda:0', 'cuda:127', 'cuda:128', 'cuda:x', 'gpu', '', 'CPU'];
// prettier-ignore
const NUMBERS = [0, 1, 2, 3, -1, -2, 0.5, 1.5, -0, NaN, Infinity, -Infinity, 2 ** 31, 2 ** 53, 2 ** 63, -(2 ** 53), 1e300, 5e-324, 100, -100];
// prettier-ignore
const STRINGS = ['float32', 'int64', 'cpu', 'cuda', 'mean', 'sum', 'none', 'selected', 'auto', 'fused', 'reference', 'x', '', '__proto__'];
const REDUCTIONS = ['mean', 'sum', 'none', 'selected', 'avg', ''];
const IMPLS = ['auto', 'fused', 'reference', 'bogus'];

const pool: NativeHandle[] = [];
const disposed: NativeHandle[] = [];

/** A small shape: dims 0..4, sizes mostly 0..5, product capped at 4096 elements. */
function smallShape(): number[] {
  const dims = int(5);
  const shape: number[] = [];
  let product = 1;
  for (let i = 0; i < dims; i++) {
    const size = pick([0, 1, 1, 2, 2, 3, 4, 5, 8]);
    if (product * Math.max(size, 1) > 4096) break;
    product *= Math.max(size, 1);
    shape.push(size);
  }
  return shape;
}

/** A shape that is sometimes malformed but never a giant valid allocation. */
function shapeArg(): unknown {
  if (chance(0.8)) return smallShape();
  return pick<unknown>([
    [-1],
    [1.5],
    [NaN],
    [Infinity],
    ['2'],
    [null],
    new Array(17).fill(1),
    {},
    'shape',
    undefined,
    [2, -3],
    [[2]],
    [2 ** 53 + 2],
  ]);
}

function typedArray(length: number): ArrayBufferView {
  switch (int(7)) {
    case 0:
      return Float32Array.from({ length }, () => random() * 4 - 2);
    case 1:
      return Float64Array.from({ length }, () => pick([random(), NaN, Infinity, -1, 0]));
    case 2:
      return Int32Array.from({ length }, () => int(5) - 1);
    case 3:
      return BigInt64Array.from({ length }, () => BigInt(int(5) - 1));
    case 4:
      return Uint8Array.from({ length }, () => int(3));
    case 5:
      return new Int16Array(length);
    default:
      return new DataView(new ArrayBuffer(length));
  }
}

function handle(): unknown {
  if (pool.length > 0 && chance(0.85)) return pick(pool);
  if (disposed.length > 0 && chance(0.5)) return pick(disposed);
  return pick<unknown>([{}, { handle: {} }, Object.create(null), [], new native.TensorHandle()]);
}

function anyValue(depth = 0): unknown {
  switch (int(12)) {
    case 0:
      return pick(NUMBERS);
    case 1:
      return pick(STRINGS);
    case 2:
      return chance(0.5);
    case 3:
      return pick([null, undefined]);
    case 4:
      return depth < 2 ? Array.from({ length: int(4) }, () => anyValue(depth + 1)) : [];
    case 5:
      return typedArray(int(6));
    case 6:
      return handle();
    case 7:
      return handle();
    case 8:
      return smallShape();
    case 9:
      return depth < 2 ? lossOptions() : {};
    case 10:
      return pick<unknown>([() => 1, Symbol('s'), 10n, new Date(0), /x/]);
    default:
      return pick(DTYPES);
  }
}

function lossOptions(): unknown {
  if (chance(0.05)) return anyValue(2);
  const o: Record<string, unknown> = {
    p: chance(0.8) ? pick([1, 0.5, 0.25, 0.01, 1e-9]) : pick(NUMBERS),
    ignoreIndex: chance(0.8) ? pick([-100, 0, 1, -1]) : pick(NUMBERS),
    labelSmoothing: chance(0.8) ? pick([0, 0.1, 1]) : pick(NUMBERS),
    reduction: chance(0.9) ? pick(REDUCTIONS) : anyValue(2),
    perSample: chance(0.9) ? chance(0.5) : anyValue(2),
    impl: chance(0.9) ? pick(IMPLS) : anyValue(2),
  };
  if (chance(0.3)) o.weight = chance(0.7) ? matching('weight') : handle();
  if (chance(0.2)) o.posWeight = chance(0.7) ? matching('weight') : handle();
  if (chance(0.1)) delete o[pick(Object.keys(o))];
  return o;
}

/** Plausible loss operands, so that the kernels run rather than only the argument checks. */
let current: { n: number; c: number; rest: number[]; dtype: string } = { n: 2, c: 3, rest: [4], dtype: 'float32' };
function matching(role: 'input' | 'target' | 'prob' | 'weight' | 'binary'): unknown {
  const { n, c, rest, dtype } = current;
  try {
    switch (role) {
      case 'input':
        return keep(native.randn([n, c, ...rest], dtype, 'cpu'));
      case 'binary':
        return keep(
          native.fromData(
            Float32Array.from({ length: n * c }, () => random()),
            [n, c],
            dtype,
            'cpu',
          ),
        );
      case 'prob':
        return keep(
          native.fromData(
            Float32Array.from({ length: n * c * rest.reduce((a, b) => a * b, 1) }, () => random()),
            [n, c, ...rest],
            dtype,
            'cpu',
          ),
        );
      case 'weight':
        return keep(
          native.fromData(
            Float32Array.from({ length: c }, () => random() * 2),
            [c],
            dtype,
            'cpu',
          ),
        );
      default: {
        const count = n * rest.reduce((a, b) => a * b, 1);
        const values = BigInt64Array.from({ length: count }, () =>
          BigInt(chance(0.95) ? int(c) : pick([-100, -1, c, 1000])),
        );
        return keep(native.fromData(values, [n, ...rest], pick(['int64', 'int64', 'int32', 'uint8']), 'cpu'));
      }
    }
  } catch {
    return handle();
  }
}

function newProblem(): void {
  current = {
    n: pick([0, 1, 2, 3]),
    c: pick([0, 1, 2, 3, 19]),
    rest: pick([[], [1], [4], [3, 5], [0], [2, 2, 2]]),
    dtype: pick(['float32', 'float32', 'float64', 'float16', 'bfloat16']),
  };
}

function keep(value: unknown): unknown {
  if (typeof value === 'object' && value !== null && typeof (value as NativeHandle).isDisposed === 'function') {
    pool.push(value as NativeHandle);
    if (pool.length > 48) {
      const old = pool.splice(int(pool.length), 1)[0];
      if (chance(0.5)) {
        old.dispose();
        disposed.push(old);
        if (disposed.length > 16) disposed.shift();
      }
    }
  }
  return value;
}

function keepResult(value: unknown): void {
  keep(value);
  if (typeof value === 'object' && value !== null && 'loss' in value) keep((value as { loss: unknown }).loss);
}

/**
 * callOperator's arguments: a listed schema (sometimes one that is not), then a random argument list drawn from
 * fresh small tensors of every dtype (not the shared pool: an operator such as bincount or oneHot allocates by
 * the values it holds, and pooled tensors may have been filled with anything), small and extreme numbers (none
 * whose allocation could succeed at a giant size: 2 ** 31 classes of int64 would be 16 GB), dtype names, lists.
 */
const SCHEMAS = native.operatorNames();
// prettier-ignore
const OPERATOR_NUMBERS = [0, 1, 2, 3, -1, -2, -3, 0.5, -0, NaN, Infinity, -Infinity, 2 ** 45, 2 ** 53, 2 ** 63, -(2 ** 53), 1e300, 5e-324, 100, -100];
const BAD_SCHEMAS = ['aten::_local_scalar_dense', 'aten::empty.memory_format', '', 'aten::argmax.nope', 'argmax', 7];

function freshTensor(): NativeHandle | unknown {
  const shape = smallShape();
  const length = shape.reduce((a, b) => a * b, 1);
  const dtype = pick(['float32', 'float32', 'float64', 'int64', 'int64', 'int32', 'uint8', 'bool', 'float16']);
  try {
    const values = Float64Array.from({ length }, () => (dtype.startsWith('float') ? random() * 6 - 3 : int(6) - 1));
    return native.fromData(values, shape, dtype === 'uint8' || dtype === 'bool' ? dtype : dtype, 'cpu');
  } catch {
    return handle();
  }
}

function operatorArgument(depth = 0): unknown {
  switch (int(10)) {
    case 0:
    case 1:
    case 2:
      return freshTensor();
    case 3:
      return chance(0.7) ? int(7) - 3 : pick(OPERATOR_NUMBERS);
    case 4:
      return chance(0.5);
    case 5:
      return pick(DTYPES);
    case 6:
      return Array.from({ length: int(5) }, () => (chance(0.85) ? int(6) - 3 : pick<unknown>(OPERATOR_NUMBERS)));
    case 7:
      return depth < 1
        ? Array.from({ length: int(4) }, () => (chance(0.85) ? freshTensor() : operatorArgument(1)))
        : [];
    case 8:
      return pick([null, undefined]);
    default:
      return pick<unknown>([{}, 'x', () => 1, Symbol('s'), 10n, new Float32Array(2), handle()]);
  }
}

/** Arguments for each known export; unknown (newer) exports get random arguments. */
const generators: Record<string, () => unknown[]> = {
  fromData: () => {
    const shape = smallShape();
    const length = shape.reduce((a, b) => a * b, 1);
    return [
      chance(0.8) ? typedArray(chance(0.8) ? length : int(6)) : anyValue(),
      chance(0.9) ? shape : shapeArg(),
      chance(0.9) ? pick(DTYPES) : anyValue(),
      chance(0.9) ? pick(DEVICES) : anyValue(),
    ];
  },
  zeros: () => [shapeArg(), chance(0.9) ? pick(DTYPES) : anyValue(), chance(0.9) ? pick(DEVICES) : anyValue()],
  ones: () => [shapeArg(), chance(0.9) ? pick(DTYPES) : anyValue(), chance(0.9) ? pick(DEVICES) : anyValue()],
  randn: () => [shapeArg(), chance(0.9) ? pick(DTYPES) : anyValue(), chance(0.9) ? pick(DEVICES) : anyValue()],
  randint: () => [
    chance(0.8) ? int(5) - 1 : pick(NUMBERS),
    chance(0.8) ? int(10) : pick(NUMBERS),
    shapeArg(),
    chance(0.9) ? pick(DTYPES) : anyValue(),
    chance(0.9) ? pick(DEVICES) : anyValue(),
  ],
  manualSeed: () => [chance(0.7) ? int(1000) : pick(NUMBERS)],
  callOperator: () => {
    const schema = chance(0.95) ? pick(SCHEMAS) : pick<unknown>(BAD_SCHEMAS);
    if (chance(0.05)) return [schema, operatorArgument()];
    // Mostly plausible: a tensor (a list of them for cat and stack) first, then small integers and tensors.
    const lists = typeof schema === 'string' && /cat|stack/.test(schema);
    const first = chance(0.9)
      ? lists
        ? Array.from({ length: 1 + int(3) }, () => freshTensor())
        : freshTensor()
      : operatorArgument();
    const rest = Array.from({ length: int(4) }, () =>
      chance(0.5) ? int(5) - 2 : chance(0.3) ? freshTensor() : operatorArgument(),
    );
    return [schema, [first, ...rest]];
  },
  setNumThreads: () => [chance(0.5) ? pick([1, 2]) : pick([0, -1, 1.5, NaN, Infinity, 4097, 2 ** 53, '2', undefined])],
  bootstrappedCrossEntropy: () => {
    if (chance(0.3)) newProblem();
    return [
      chance(0.9) ? matching('input') : handle(),
      chance(0.9) ? matching(chance(0.85) ? 'target' : 'prob') : handle(),
      lossOptions(),
    ];
  },
  crossEntropy: () => {
    if (chance(0.3)) newProblem();
    return [
      chance(0.9) ? matching('input') : handle(),
      chance(0.9) ? matching(chance(0.85) ? 'target' : 'prob') : handle(),
      lossOptions(),
    ];
  },
  bootstrappedBinaryCrossEntropy: () => {
    if (chance(0.3)) newProblem();
    const x = chance(0.9) ? matching('binary') : handle();
    return [x, chance(0.9) ? matching('binary') : handle(), lossOptions(), chance(0.9) ? chance(0.5) : anyValue()];
  },
};

// Files for saveObject/loadObject live in a scratch folder, never where the fuzzer runs: a random string path
// would otherwise write into the working directory.
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'bce-fuzz-'));
process.on('exit', () => fs.rmSync(scratch, { recursive: true, force: true }));
const scratchFile = () => path.join(scratch, `f${int(4)}.pt`);
const notAPath = () => pick<unknown>([undefined, null, 42, {}, [], '']);
function saveableValue(depth = 0): unknown {
  if (chance(0.3)) return handle();
  if (depth < 3 && chance(0.3)) return Array.from({ length: int(4) }, () => saveableValue(depth + 1));
  if (depth < 3 && chance(0.3)) return { a: saveableValue(depth + 1), b: saveableValue(depth + 1) };
  if (depth < 3 && chance(0.1))
    return new Map<unknown, unknown>([[pick<unknown>([0, 'k', 1.5, NaN, {}]), saveableValue(depth + 1)]]);
  return chance(0.8) ? pick<unknown>([...NUMBERS, ...STRINGS, true, null, 2n ** 70n, -5n]) : anyValue();
}
generators.saveObject = () => [chance(0.9) ? scratchFile() : notAPath(), saveableValue()];
generators.loadObject = () => {
  if (chance(0.2)) fs.writeFileSync(scratchFile(), Buffer.from(Array.from({ length: int(64) }, () => int(256))));
  return [chance(0.9) ? scratchFile() : notAPath(), chance(0.7) ? undefined : pick<unknown>([...DEVICES, 3])];
};
generators.copyTensors = () => {
  const n = int(3);
  const list = () => (chance(0.9) ? Array.from({ length: chance(0.9) ? n : int(3) }, handle) : anyValue());
  return [list(), list()];
};
generators.clipGradNorm = () => [
  chance(0.9) ? Array.from({ length: int(4) }, handle) : anyValue(),
  chance(0.8) ? pick([0.5, 1, 10]) : pick<unknown>(NUMBERS),
  chance(0.8) ? pick([1, 2, Infinity]) : pick<unknown>(NUMBERS),
  chance(0.9) ? chance(0.2) : anyValue(),
];

const METHODS: Record<string, () => unknown[]> = {
  shape: () => [],
  dtype: () => [],
  device: () => [],
  numel: () => [],
  requiresGrad: () => [],
  setRequiresGrad: () => [chance(0.8) ? chance(0.5) : anyValue()],
  grad: () => [],
  toArray: () => [],
  item: () => [],
  to: () => [chance(0.5) ? pick(DTYPES) : chance(0.7) ? pick(DEVICES) : anyValue()],
  detach: () => [],
  reshape: () => [chance(0.8) ? [...smallShape(), ...(chance(0.3) ? [-1] : [])] : anyValue()],
  sum: () => (chance(0.3) ? [] : [chance(0.8) ? [int(5) - 2] : anyValue(), chance(0.8) ? chance(0.5) : anyValue()]),
  mean: () => (chance(0.3) ? [] : [chance(0.8) ? [int(5) - 2] : anyValue(), chance(0.8) ? chance(0.5) : anyValue()]),
  add: () => [chance(0.5) ? handle() : anyValue()],
  sub: () => [chance(0.5) ? handle() : anyValue()],
  mul: () => [chance(0.5) ? handle() : anyValue()],
  div: () => [chance(0.5) ? handle() : anyValue()],
  backward: () => (chance(0.5) ? [] : [chance(0.7) ? handle() : anyValue()]),
  dispose: () => [],
  isDisposed: () => [],
};

/** Requests far beyond memory or int64: each must throw, not crash or be OOM-killed. */
const GIANT: Array<[string, unknown[]]> = [
  ['zeros', [[2 ** 40], 'float32', 'cpu']],
  ['ones', [[2 ** 24, 2 ** 24], 'float64', 'cpu']],
  ['randn', [[2 ** 26, 2 ** 26], 'float32', 'cpu']],
  ['randint', [0, 10, [2 ** 45], 'int64', 'cpu']],
  ['zeros', [[2 ** 52, 2 ** 52, 2 ** 52], 'float32', 'cpu']],
  ['zeros', [[2 ** 31, 2 ** 31, 2 ** 31, 2 ** 31], 'uint8', 'cpu']],
  ['fromData', [new Float32Array(4), [2 ** 52, 2 ** 52, 0], 'float32', 'cpu']],
  ['fromData', [new Float32Array(4), [2 ** 40, 2 ** 40], 'float32', 'cpu']],
];

const stats = {
  seed,
  calls: 0,
  returned: 0,
  threw: 0,
  errorNames: {} as Record<string, number>,
  perEntryPoint: {} as Record<string, number>,
  giant: [] as string[],
  unknownExports: [] as string[],
  nonErrorThrows: 0,
  /** callOperator by schema: how many calls returned and threw (the fuzz reaches the kernels, not only checks). */
  operators: {} as Record<string, { returned: number; threw: number }>,
};

function call(name: string, fn: () => unknown, schema?: unknown): void {
  stats.calls += 1;
  stats.perEntryPoint[name] = (stats.perEntryPoint[name] ?? 0) + 1;
  const perSchema = typeof schema === 'string' ? (stats.operators[schema] ??= { returned: 0, threw: 0 }) : undefined;
  try {
    keepResult(fn());
    stats.returned += 1;
    if (perSchema) perSchema.returned += 1;
  } catch (error) {
    stats.threw += 1;
    if (perSchema) perSchema.threw += 1;
    const label = error instanceof Error ? error.name : `non-Error ${typeof error}`;
    if (!(error instanceof Error)) stats.nonErrorThrows += 1;
    stats.errorNames[label] = (stats.errorNames[label] ?? 0) + 1;
  }
}

/** A native function or method as the fuzzer calls it: with arguments of any type. */
type AnyFunction = (...a: unknown[]) => unknown;

/** The methods of a native class's prototype, to call on any receiver with any arguments. */
function untypedMethods(cls: { prototype: object }): Record<string, AnyFunction> {
  return cls.prototype as Record<string, AnyFunction>;
}

const exportsOf: Record<string, unknown> = Object.fromEntries(Object.entries(native));
const functions = Object.keys(exportsOf).filter((k) => typeof exportsOf[k] === 'function' && k !== 'TensorHandle');
stats.unknownExports = functions.filter(
  (k) => !(k in generators) && !['cudaIsAvailable', 'cudaDeviceCount', 'getNumThreads', 'info', 'memory'].includes(k),
);
const tensorMethods = untypedMethods(native.TensorHandle);

// Seed the pool with a few valid tensors.
for (let i = 0; i < 8; i++) keep(native.randn(smallShape(), 'float32', 'cpu'));

// Native objects of the other classes, to call methods on receivers of the wrong kind (which must throw, never
// crash): tensor methods on a module or an optimizer, and theirs on tensors.
const foreign: object[] = [
  native.ModuleHandle.load(path.join(__dirname, '..', 'models', 'segnet.pt')),
  new native.OptimizerHandle('sgd', [native.randn([2], 'float32', 'cpu')], {
    lr: 0.1,
    momentum: 0,
    dampening: 0,
    weightDecay: 0,
    nesterov: false,
  }),
];
const foreignMethods = [native.ModuleHandle, native.OptimizerHandle].flatMap((cls) =>
  Object.getOwnPropertyNames(cls.prototype)
    .filter((name) => name !== 'constructor')
    .map((name) => ({ name, fn: untypedMethods(cls)[name] })),
);

for (const [name, giantArgs] of GIANT) {
  try {
    keepResult((exportsOf[name] as AnyFunction)(...giantArgs));
    stats.giant.push(`${name}: returned (unexpected)`);
  } catch (error) {
    stats.giant.push(
      `${name}: ${(error as Error).name}: ${String((error as Error).message)
        .split('\n')[0]
        .slice(0, 120)}`,
    );
  }
  stats.calls += 1;
}

while (stats.calls < totalCalls) {
  const roll = random();
  if (roll < 0.45 || only !== undefined) {
    const name = only ?? pick(functions);
    const fn = exportsOf[name] as AnyFunction;
    const argList = generators[name] ? generators[name]() : Array.from({ length: int(5) }, () => anyValue());
    call(name, () => fn(...argList), name === 'callOperator' ? argList[0] : undefined);
  } else if (roll < 0.95) {
    const method = pick(Object.keys(METHODS));
    const target = chance(0.1) ? pick(foreign) : chance(0.93) ? handle() : anyValue();
    const argList = METHODS[method]();
    call(`TensorHandle.${method}`, () => tensorMethods[method].apply(target, argList));
  } else if (roll < 0.97) {
    // A module's or optimizer's method on a tensor handle or anything else.
    const { name, fn } = pick(foreignMethods);
    call(`foreign.${name}`, () =>
      fn.apply(
        chance(0.7) ? handle() : anyValue(),
        Array.from({ length: int(3) }, () => anyValue()),
      ),
    );
  } else {
    // The constructor itself, with and without new.
    call('TensorHandle()', () =>
      chance(0.5) ? new native.TensorHandle() : Reflect.apply(native.TensorHandle, undefined, []),
    );
  }
}

for (const h of pool) h.dispose();
const tensorsLeft = native.memory().tensors;
console.log(`FUZZ ${JSON.stringify({ ...stats, tensorsLeftAfterDisposingPool: tensorsLeft })}`);
