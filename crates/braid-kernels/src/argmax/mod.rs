//! Greedy decoding on the device: the argmax of each row of logits, so that only token ids
//! cross to the host.

mod kernel;

pub(crate) use kernel::cube_best;

use cubecl::prelude::*;
use cubecl::std::tensor::TensorHandle;

use crate::KernelError;
use crate::check::{Check, output_like};

const NAME: &str = "argmax";
/// Units per cube, at most.
const BLOCK: usize = 1024;
/// Vectors in flight per unit.
const BATCH: usize = 4;
/// Units of a cube that scans a slice of a row ([`argmax_in`] with more than one slice).
const PART_BLOCK: usize = 256;
/// Rows from which each row is one cube's work ([`default_slices`]).
const SPLIT_ROWS: usize = 16;

/// `logits: [rows, vocab]` (any float dtype) -> `[rows]` u32. A row without a finite value gives `vocab`.
/// Few rows (under 16) split each row over cubes ([`default_slices`]): at batch 1 a whole
/// vocabulary row on one cube is latency-bound (10.5 us for Qwen3's 151,936 logits on an H100,
/// 2026-11-27, 1.4% of a decode step).
pub fn argmax(client: &Client, logits: TensorHandle) -> Result<TensorHandle, KernelError> {
    let shape = logits.shape();
    let slices = if shape.len() == 2 && shape[1] > 0 { default_slices(shape[0], shape[1], vector(logits.dtype, shape[1])) } else { 1 };
    argmax_in(client, logits, slices)
}

/// Slices a row of `vocab` logits (in vectors of `vector`) is split into for `rows` rows: one
/// cube per row from `SPLIT_ROWS` (16) rows, else one load round per unit of a `PART_BLOCK`-unit (256)
/// cube per slice (19 for Qwen3's vocabulary in bf16).
pub fn default_slices(rows: usize, vocab: usize, vector: usize) -> usize {
    if rows >= SPLIT_ROWS {
        return 1;
    }
    (vocab / vector.max(1)).div_ceil(PART_BLOCK * BATCH).clamp(1, 1024)
}

/// [`argmax`] with each row split into `slices` cubes (1: one cube per row, one launch; more:
/// a launch of `slices` cubes a row, each its slice's best, then one cube per row over those).
/// The same result either way: the row's largest value, the first index on ties.
pub fn argmax_in(client: &Client, logits: TensorHandle, slices: usize) -> Result<TensorHandle, KernelError> {
    let c = Check::new(NAME);
    let [rows, vocab] = c.matrix("logits", &logits)?;
    if vocab == 0 || vocab > u32::MAX as usize {
        return Err(c.shape_err("logits", &logits, "[rows, 1..=u32::MAX]".into()));
    }
    if slices == 0 || slices > 1024 {
        return Err(KernelError::Unsupported { kernel: c.kernel(), what: format!("{slices} slices a row"), why: "1..=1024".into() });
    }
    let dtype = logits.dtype;
    let out = output_like(client, &[rows], ElemType::UInt(cubecl::ir::UIntKind::U32));
    if rows == 0 {
        return Ok(out);
    }
    let hw = &client.properties().hardware;
    // As many units as the device allows up to `most` (a power of two, for the tree).
    let units = |most: usize| {
        let mut block = most;
        while block > 32 && (block as u32 > hw.max_units_per_cube || block as u32 > hw.max_cube_dim.0) {
            block /= 2;
        }
        block
    };
    let vector = vector(dtype, vocab);
    if slices == 1 {
        let block = units(BLOCK);
        kernel::argmax_kernel::launch(
            client,
            CubeCount::new_1d(rows as u32),
            CubeDim::new_1d(block as u32),
            vector,
            logits.into_arg(),
            out.clone().into_arg(),
            vocab as u32,
            block,
            BATCH,
            dtype,
        );
        return Ok(out);
    }
    let f32_t = ElemType::Float(cubecl::ir::FloatKind::F32);
    let vals = output_like(client, &[rows * slices], f32_t);
    let idxs = output_like(client, &[rows * slices], ElemType::UInt(cubecl::ir::UIntKind::U32));
    let block = units(PART_BLOCK);
    kernel::argmax_part_kernel::launch(
        client,
        CubeCount::new_2d(slices as u32, rows as u32),
        CubeDim::new_1d(block as u32),
        vector,
        logits.into_arg(),
        vals.clone().into_arg(),
        idxs.clone().into_arg(),
        vocab as u32,
        block,
        BATCH,
        dtype,
    );
    let fin = units(slices.next_power_of_two().max(32));
    kernel::argmax_final_kernel::launch(
        client,
        CubeCount::new_1d(rows as u32),
        CubeDim::new_1d(fin as u32),
        vals.into_arg(),
        idxs.into_arg(),
        out.clone().into_arg(),
        slices as u32,
        vocab as u32,
        fin,
    );
    Ok(out)
}

/// Elements a load reads: 16 bytes where the row length allows.
fn vector(dtype: ElemType, vocab: usize) -> usize {
    let mut vector = (16 / dtype.size()).max(1);
    while !vocab.is_multiple_of(vector) {
        vector /= 2;
    }
    vector
}
