//! Placeholder: the disk abstraction is being written.
