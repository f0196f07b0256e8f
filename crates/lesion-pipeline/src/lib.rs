//! End-to-end runs that chain the task crates (data → model → train → predict → eval) into one
//! command: [`demo`], the README's first command. Each step is the task crates' own library
//! call; this crate only decides the order, the folders and the settings.
pub mod demo;

pub use demo::{run_demo, DemoOutcome, DemoSettings};
pub mod bundle;
pub mod calibrate;
pub mod e2e;
pub mod engine;
pub mod seg_informed;
pub mod torchscript;
