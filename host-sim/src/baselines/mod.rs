//! What federated figures are measured against: the centralized upper bound, its seen-user
//! counterpart for context, and the speed benchmark.

pub mod bench;
pub mod centralized;
pub mod seen;
