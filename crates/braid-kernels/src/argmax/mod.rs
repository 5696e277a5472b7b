//! Greedy decoding on the device: the argmax of each row of logits, so that only token ids
//! cross to the host.

mod kernel;

use cubecl::prelude::*;
use cubecl::std::tensor::TensorHandle;

use crate::KernelError;
use crate::check::{Check, output_like};

const NAME: &str = "argmax";
/// Units per cube, at most.
const BLOCK: usize = 1024;
/// Vectors in flight per unit.
const BATCH: usize = 4;

/// `logits: [rows, vocab]` (any float dtype) -> `[rows]` u32. A row without a finite value gives `vocab`.
pub fn argmax(client: &Client, logits: TensorHandle) -> Result<TensorHandle, KernelError> {
    let c = Check::new(NAME);
    let [rows, vocab] = c.matrix("logits", &logits)?;
    if vocab == 0 || vocab > u32::MAX as usize {
        return Err(c.shape_err("logits", &logits, "[rows, 1..=u32::MAX]".into()));
    }
    let dtype = logits.dtype;
    let out = output_like(client, &[rows], ElemType::UInt(cubecl::ir::UIntKind::U32));
    if rows > 0 {
        // As many units as the device allows up to BLOCK (a power of two, for the tree).
        let hw = &client.properties().hardware;
        let mut block = BLOCK;
        while block > 32 && (block as u32 > hw.max_units_per_cube || block as u32 > hw.max_cube_dim.0) {
            block /= 2;
        }
        // 16-byte loads where the row length allows.
        let mut vector = (16 / dtype.size()).max(1);
        while vocab % vector != 0 {
            vector /= 2;
        }
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
    }
    Ok(out)
}
