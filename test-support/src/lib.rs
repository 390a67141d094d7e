//! Real servers for tests, each started by the test that needs it and
//! stopped when its handle drops: never assumed to be running.

pub mod browser;
pub mod postgres;
pub mod s3;
pub mod smtp;
pub mod webhook;
