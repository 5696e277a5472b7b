//! Shared by the wgpu kernel tests.

use cubecl::device::WgpuDeviceKind;
use cubecl::prelude::*;

/// A wgpu client (CI: lavapipe), or `None` with a note where no adapter works (a failure
/// instead when `BRAID_REQUIRE_WGPU` is set).
pub fn client() -> Option<Client> {
    match std::panic::catch_unwind(|| cubecl::Device::wgpu(WgpuDeviceKind::DefaultDevice).map(|d| d.client())) {
        Ok(Ok(c)) => Some(c),
        _ if std::env::var_os("BRAID_REQUIRE_WGPU").is_some() => panic!("BRAID_REQUIRE_WGPU is set but no wgpu adapter works"),
        _ => {
            eprintln!("no wgpu adapter: skipped (CI runs this on lavapipe)");
            None
        }
    }
}
