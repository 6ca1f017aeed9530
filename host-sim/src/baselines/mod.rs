//! What federated figures are measured against: the centralized upper bound and the speed
//! benchmark.

pub mod bench;
pub mod centralized;
