//! lvstun's end-to-end harness: the local control plane and the lab VM.

pub mod cluster;
pub mod controlplane;
pub mod images;
pub mod lab;
pub mod operator_fixture;
pub mod refusals;
