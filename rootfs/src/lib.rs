//! kiln-rootfs: image roots on this machine. The sandbox that makes a RUN
//! or a step a security boundary, the unpacking of layers (hostile tars
//! included) into roots shared by id mapping, and the snapshot of what a
//! command changed, written back as a layer. The builder, the local runner
//! and the test cluster's node all stand on it; none of it talks to a
//! registry.

// A test reads best as one list of steps; the 120-line limit is for the
// product's code.
#![cfg_attr(test, allow(clippy::too_many_lines))]

pub mod private_dir;
pub mod sandbox;
pub mod snapshot;
pub mod unpack;
pub mod xattr;
