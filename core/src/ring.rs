//! Placeholder: the consistent-hash ring is being written.
