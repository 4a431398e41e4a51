//! kiln-builder: turns a pipeline's image settings into layered OCI images.
