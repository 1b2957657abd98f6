/**
 * Memory in loops: tidy/trainStep keep exactly what is returned (at any depth, in null-prototype objects too) and
 * free the rest; a synchronous loop that keeps its tensors gets one warning on stderr naming the remedies.
 */
import * as bce from '../lib';

const live = () => bce.memory().tensors;

test('tidy keeps a returned tensor nested 12 deep and one held by a null-prototype object', () => {
  const before = live();
  const { deep, bare } = bce.tidy(() => {
    bce.zeros([4]); // freed
    let deep: unknown = bce.ones([2]);
    for (let i = 0; i < 12; i++) deep = i % 2 === 0 ? [deep] : { inner: deep };
    const bare = Object.create(null) as { t: bce.Tensor };
    bare.t = bce.ones([3]);
    return { deep, bare };
  });
  expect(live()).toBe(before + 2);
  let t: unknown = deep;
  while (!bce.isTensor(t)) t = Array.isArray(t) ? t[0] : (t as { inner: unknown }).inner;
  expect(Array.from((t as bce.Tensor).toArray() as Float32Array)).toEqual([1, 1]);
  expect(Array.from(bare.t.toArray() as Float32Array)).toEqual([1, 1, 1]);
  (t as bce.Tensor).dispose();
  bare.t.dispose();
  expect(live()).toBe(before);
});

test('trainStep frees every tensor a training step makes and returns its value', () => {
  const w = bce.randn([3, 4], { requiresGrad: true });
  const x = bce.randn([5, 3]);
  const y = bce.randint(0, 4, [5]);
  const optimizer = new bce.optim.SGD([w], { lr: 0.1 });
  const before = live();
  const losses: number[] = [];
  for (let it = 0; it < 20; it++) {
    losses.push(
      bce.trainStep(() => {
        optimizer.zeroGrad();
        const logits = x
          .reshape([5, 3, 1])
          .mul(w.reshape([1, 3, 4]))
          .sum([1]);
        const l = bce.crossEntropy(logits, y);
        l.backward();
        optimizer.step();
        return l.item();
      }),
    );
  }
  expect(live()).toBeLessThanOrEqual(before + 1); // w's gradient, kept by w
  expect(losses[19]).toBeLessThan(losses[0]);
  expect(() => bce.trainStep('f' as never)).toThrow(/fn must be a function/);
});

test('a synchronous loop that keeps its tensors gets one warning naming the remedies', () => {
  const warnings: { message: string; code?: string }[] = [];
  const spy = jest.spyOn(process, 'emitWarning').mockImplementation(((message: string, options?: { code?: string }) => {
    warnings.push({ message, code: options?.code });
  }) as typeof process.emitWarning);
  const kept: bce.Tensor[] = [];
  try {
    bce.setMemoryWarningThreshold(8 * 1024 * 1024);
    // 256 KiB each: the threshold is passed after 32, and 200 are made.
    for (let i = 0; i < 200; i++) kept.push(bce.zeros([64 * 1024]));
  } finally {
    bce.setMemoryWarningThreshold(Infinity);
    spy.mockRestore();
    kept.forEach((t) => t.dispose());
  }
  const ours = warnings.filter((w) => w.code === 'BOOTSTRAPPED_CE_MEMORY');
  expect(ours.length).toBe(1);
  expect(ours[0].message).toMatch(/trainStep\(\(\) => \{ \.\.\. \}\) or tidy\(\), call dispose\(\)/);
  expect(ours[0].message).toMatch(/await something once per step/);
  expect(() => bce.setMemoryWarningThreshold(-1)).toThrow(RangeError);
});

afterAll(() => bce.setMemoryWarningThreshold(1024 ** 3));
