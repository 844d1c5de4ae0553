//! keel-tests
