//! Port of the standard workload generator (being written).
