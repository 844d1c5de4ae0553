//! Placeholder: the LSM engine is being written.
