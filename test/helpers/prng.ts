/**
 * mulberry32: a small, fast, seeded 32-bit PRNG returning floats in [0, 1). The project's one PRNG, used wherever
 * data must be reproducible across platforms without LibTorch's RNG: the tests' data, the parity grid (whose
 * golden file depends on its sequence), the fuzzer's arguments, the demo's synthetic images and the clustered
 * benchmark's logits. Scripts import it from here.
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
