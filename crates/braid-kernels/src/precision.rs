/// Where a fused kernel rounds to the activation dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// PyTorch's rounding points exactly: f32 statistics, the normalised value rounded to the
    /// activation dtype, then multiplied by the weight in that dtype; matmul operands in the
    /// activation dtype with f32 accumulation; each intermediate tensor rounded.
    #[default]
    Torch,
    /// Everything inside the kernel in f32; one rounding, at the output.
    F32,
}

impl Precision {
    /// True when intermediates stay in f32 (comptime flag of the kernels).
    pub fn f32_internal(self) -> bool {
        matches!(self, Precision::F32)
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::Torch => "torch",
            Precision::F32 => "f32",
        }
    }
}
