//! Test support: the local registries and the judges of kiln's output.
