/**
 * Child process of test/hardening.test.ts: runs each module output this package refuses (fixtures of
 * hardening-fixtures.py, in the folder given as the only argument) through the use that used to abort the process,
 * and prints one line per case: `CASE <name> <JSON of the error's name and message, or of the value>`. In a child,
 * an abort shows as a signal and missing lines instead of killing the test runner.
 */
import * as path from 'path';
import * as bce from '../../lib';
import { native, NativeHandle } from '../../lib/native';

const dir = process.argv[2];

interface RawModule {
  forward(...inputs: NativeHandle[]): unknown;
}
const rawLoad = (file: string): RawModule =>
  (native as unknown as { ModuleHandle: { load(path: string, device: string): RawModule } }).ModuleHandle.load(
    file,
    'cpu',
  );

const cases: [string, () => unknown][] = [
  [
    'sparse toArray',
    () => (bce.jit.load(path.join(dir, 'sparse.pt')).forward(bce.ones([2, 3])) as bce.Tensor).toArray(),
  ],
  ['nested shape', () => bce.jit.load(path.join(dir, 'nested.pt')).forward(bce.ones([2, 3])).shape],
  [
    'nested into the loss',
    () =>
      bce.bootstrappedCrossEntropy(
        bce.jit.load(path.join(dir, 'nested.pt')).forward(bce.ones([2, 3])),
        bce.zeros([2], { dtype: 'int64' }),
        0,
        0.5,
      ),
  ],
  [
    'mkldnn toArray',
    () =>
      bce.jit
        .load(path.join(dir, 'mkldnn.pt'))
        .forward(bce.ones([2, 3]))
        .toArray(),
  ],
  [
    'complex item',
    () =>
      bce.jit
        .load(path.join(dir, 'complex.pt'))
        .forward(bce.ones([1]))
        .item(),
  ],
  [
    'quantized toArray',
    () =>
      bce.jit
        .load(path.join(dir, 'quantized.pt'))
        .forward(bce.ones([2, 3]))
        .toArray(),
  ],
  [
    'int8 toArray',
    () =>
      bce.jit
        .load(path.join(dir, 'int8.pt'))
        .forward(bce.ones([2, 3]))
        .toArray(),
  ],
  [
    'sparse grad toArray',
    () => {
      const model = bce.jit.load(path.join(dir, 'sparse_grad.pt'));
      model.forward(bce.tensor([0, 2], { dtype: 'int64' })).backward();
      return model.parameters()[0].grad?.toArray();
    },
  ],
  // The raw addon, without the facade: refused natively all the same.
  ['raw sparse', () => rawLoad(path.join(dir, 'sparse.pt')).forward(bce.ones([2, 3]).handle)],
  ['raw complex', () => rawLoad(path.join(dir, 'complex.pt')).forward(bce.ones([1]).handle)],
];

for (const [name, run] of cases) {
  let result: unknown;
  try {
    const value = run();
    result = { value: String(value) };
  } catch (error) {
    result = { name: (error as Error).name, message: (error as Error).message };
  }
  process.stdout.write(`CASE ${name} ${JSON.stringify(result)}\n`);
}
