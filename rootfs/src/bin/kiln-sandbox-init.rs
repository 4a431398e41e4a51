//! The sandbox's init as a program of its own, for executables that cannot
//! host it in their `main` (test harnesses, other tools linking kiln-rootfs):
//! the sandbox finds it beside them.

// A test reads best as one list of steps; the 120-line limit is for the
// product's code.
#![cfg_attr(test, allow(clippy::too_many_lines))]

fn main() {
    kiln_rootfs::sandbox::run_init_if_requested();
    eprintln!(
        "kiln-sandbox-init is started by kiln's sandbox (as `kiln-sandbox-init {}`), not by hand",
        kiln_rootfs::sandbox::INIT_ARG
    );
    std::process::exit(2);
}
