//! keel-sim
