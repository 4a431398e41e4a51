//! The Kubernetes backend's pure parts: names and labels that the API
//! server accepts, and the step pod manifest built from a step's effective
//! settings.

pub mod names;
pub mod pod;
