//! Test helpers for kernels: random blocks, checked against dequantize-then-f32.

use super::{Act, Input, Kernel};

/// A small deterministic generator (xorshift).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn bytes<B: Copy>(&mut self) -> B {
        let mut b = std::mem::MaybeUninit::<B>::uninit();
        let p = b.as_mut_ptr() as *mut u8;
        for i in 0..std::mem::size_of::<B>() {
            // SAFETY: writes within the block; every byte pattern is a valid block once the
            // caller fixes the float fields.
            unsafe { *p.add(i) = self.next() as u8 };
        }
        // SAFETY: all bytes written above.
        unsafe { b.assume_init() }
    }
}

/// Checks `K` on random rows: each tile result within `tol` (relative to `sum |w x|`) of
/// the f32 dot product of the dequantized weights with the unquantized activations, and
/// every tile shape giving bit-identical results.
pub fn check<K: Kernel>(mut block: impl FnMut(&mut Rng) -> K::W, tol: f32) {
    let mut rng = Rng(0x9e3779b97f4a7c15);
    for blocks in [1usize, 3, 8] {
        let cols = blocks * K::QK;
        let w: Vec<Vec<K::W>> = (0..4)
            .map(|_| (0..blocks).map(|_| block(&mut rng)).collect())
            .collect();
        let x: Vec<f32> = (0..4 * cols).map(|_| rng.f32()).collect();
        let input = Input::new(&x, 4);
        let acts = <K::A as Act>::of(&input);
        let a: Vec<&[K::A]> = acts.chunks(blocks).collect();
        let tile = K::tile::<4, 4>([&w[0], &w[1], &w[2], &w[3]], [a[0], a[1], a[2], a[3]]);
        let mut deq = vec![0f32; cols];
        for r in 0..4 {
            K::dequantize(&w[r], &mut deq);
            assert!(deq.iter().all(|v| v.is_finite()));
            for t in 0..4 {
                let xt = &x[t * cols..(t + 1) * cols];
                let exact: f32 = deq.iter().zip(xt).map(|(a, b)| a * b).sum();
                let mag: f32 = deq.iter().zip(xt).map(|(a, b)| (a * b).abs()).sum();
                let got = tile[r][t];
                assert!(
                    (got - exact).abs() <= tol * mag + 1e-5,
                    "{blocks} blocks, row {r} token {t}: kernel {got}, reference {exact} (sum |wx| {mag})"
                );
                assert_eq!(
                    K::tile::<1, 1>([&w[r]], [a[t]])[0][0],
                    got,
                    "tile shape changes the result"
                );
                assert_eq!(K::tile::<2, 1>([&w[r], &w[0]], [a[t]])[0][0], got);
                assert_eq!(K::tile::<1, 3>([&w[r]], [a[0], a[t], a[1]])[0][1], got);
            }
        }
    }
}
