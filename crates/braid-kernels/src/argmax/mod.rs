//! Greedy decoding on the device: the argmax of each row of logits, so that only token ids
//! cross to the host.

mod kernel;

use cubecl::prelude::*;
use cubecl::std::tensor::TensorHandle;

use crate::KernelError;
use crate::check::{Check, output_like};

const NAME: &str = "argmax";
const BLOCK: usize = 256;

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
        kernel::argmax_kernel::launch(
            client,
            CubeCount::new_1d(rows as u32),
            CubeDim::new_1d(BLOCK as u32),
            logits.into_arg(),
            out.clone().into_arg(),
            BLOCK,
            dtype,
        );
    }
    Ok(out)
}
